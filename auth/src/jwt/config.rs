//! `[auth.jwt]`: where the verification keys come from and what a token must say.
//! Key names follow Trino's `http-server.authentication.jwt.*` properties in snake case.

use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Deserializer, Serialize};

/// The longest leeway `validate` accepts: clocks more than five minutes apart are a
/// misconfiguration, and a long leeway keeps stolen expired tokens alive.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Algorithms accepted when `algorithms` is not set: every asymmetric algorithm
/// `jsonwebtoken` verifies. HMAC algorithms are never on by default.
pub const DEFAULT_ALGORITHMS: [&str; 9] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// What `key_file` holds. Without `key_type` it is decided by content: a PEM block is a
/// public key, anything else a base64 HMAC secret (Trino's reading of the same file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// A PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`): RSA, EC (P-256/P-384) or Ed25519.
    PublicKey,
    /// An HMAC secret, base64-encoded (whitespace ignored), as Trino reads it.
    HmacBase64,
    /// An HMAC secret, the file's bytes as they are (one trailing newline dropped).
    HmacRaw,
}

/// JWT bearer-token authentication (`[auth.jwt]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// A file holding one PEM public key or an HMAC secret (Trino `key-file`). Read when the
    /// authenticator is built. Exactly one of `key_file`, `jwks_url`, `issuer_url`.
    pub key_file: Option<PathBuf>,
    /// How to read `key_file`; decided by content when unset (see [`KeyType`]).
    pub key_type: Option<KeyType>,
    /// A JWKS document (`{"keys": [...]}`) with the signing keys, fetched on first use and
    /// refreshed when a token names an unknown `kid`.
    pub jwks_url: Option<String>,
    /// An OpenID Connect issuer: the JWKS is found through
    /// `<issuer_url>/.well-known/openid-configuration`, whose `issuer` must equal this URL.
    /// Also the default `required_issuer`.
    pub issuer_url: Option<String>,
    /// PEM file of CA certificates trusted for the https JWKS/discovery endpoints, instead of
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` JWKS and issuer URLs (tests, sidecars on localhost). Off by default:
    /// keys fetched over plain HTTP can be replaced by anyone on the path.
    pub allow_insecure_http: bool,
    /// The `iss` every token must carry (Trino `required-issuer`).
    pub required_issuer: Option<String>,
    /// The audience a token's `aud` must contain (Trino `required-audience`): one string or a
    /// list, any of which is accepted.
    #[serde(deserialize_with = "one_or_many_opt")]
    pub required_audience: Option<Vec<String>>,
    /// Accept tokens from any issuer when no `required_issuer` is set. Must be said explicitly.
    pub allow_missing_issuer: bool,
    /// Accept tokens for any audience when no `required_audience` is set. Must be said
    /// explicitly.
    pub allow_missing_audience: bool,
    /// Signature algorithms accepted (JOSE names). Default: the RSA, RSA-PSS, ECDSA and EdDSA
    /// algorithms. `HS256`/`HS384`/`HS512` only with an HMAC secret in `key_file`; `none` never.
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most 300).
    pub leeway_secs: u64,
    /// Claims that name the user, tried in order; the first non-empty string wins (Trino
    /// `principal-field`). A dotted name (`realm.user`) also looks into nested objects.
    #[serde(deserialize_with = "one_or_many")]
    pub principal_field: Vec<String>,
    /// Claim with the user's groups: an array of strings, or one string separated by spaces
    /// or commas (Trino `groups-field`).
    pub groups_field: Option<String>,
    /// Longest token accepted; longer ones are refused before any decoding.
    pub max_token_bytes: usize,
    /// Least time between two JWKS fetches triggered by tokens naming unknown key ids, in
    /// seconds. Concurrent misses share one fetch.
    pub jwks_refresh_cooldown_secs: u64,
    /// How long fetched keys are used before they are fetched again, in seconds.
    pub jwks_cache_ttl_secs: u64,
    /// Timeout of one JWKS or discovery request, in seconds.
    pub http_timeout_secs: u64,
    /// How long a verified token is remembered (by its SHA-256), so a client that sends the
    /// same token on every call pays for one signature check; never past the token's `exp`.
    /// A key removed from the JWKS stops being honoured for tokens already seen after at most
    /// this long. `0` verifies every call.
    pub verified_cache_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            key_file: None,
            key_type: None,
            jwks_url: None,
            issuer_url: None,
            ca_file: None,
            allow_insecure_http: false,
            required_issuer: None,
            required_audience: None,
            allow_missing_issuer: false,
            allow_missing_audience: false,
            algorithms: DEFAULT_ALGORITHMS.iter().map(|a| a.to_string()).collect(),
            leeway_secs: 30,
            principal_field: vec!["sub".into()],
            groups_field: None,
            max_token_bytes: 16 * 1024,
            jwks_refresh_cooldown_secs: 60,
            jwks_cache_ttl_secs: 3600,
            http_timeout_secs: 5,
            verified_cache_secs: 60,
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn one_or_many_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    one_or_many(d).map(Some)
}

/// Parses a JOSE algorithm name; `none` and unknown names are errors.
pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` (unsigned tokens) is never accepted".into());
    }
    Algorithm::from_str(name).map_err(|_| format!("unknown algorithm `{name}`"))
}

impl JwtConfig {
    /// The issuer tokens must carry: `required_issuer`, else `issuer_url`.
    pub fn effective_issuer(&self) -> Option<&str> {
        self.required_issuer.as_deref().or(self.issuer_url.as_deref())
    }

    /// The configured algorithms that parse (errors are reported by `validate`).
    pub(crate) fn parsed_algorithms(&self) -> Vec<Algorithm> {
        self.algorithms.iter().filter_map(|a| parse_algorithm(a).ok()).collect()
    }

    /// Problems serde cannot see, as (key, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, reason: String| problems.push((key.to_string(), reason));
        let sources = [self.key_file.is_some(), self.jwks_url.is_some(), self.issuer_url.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            problem("key_file", "set exactly one of `key_file`, `jwks_url`, `issuer_url`".into());
        }
        if self.key_type.is_some() && self.key_file.is_none() {
            problem("key_type", "only applies to `key_file`".into());
        }
        for (key, url) in [("jwks_url", &self.jwks_url), ("issuer_url", &self.issuer_url)] {
            if let Some(url) = url
                && let Err(reason) = check_url(url, self.allow_insecure_http)
            {
                problem(key, reason);
            }
        }
        if self.ca_file.is_some() && self.key_file.is_some() {
            problem("ca_file", "only applies to `jwks_url` or `issuer_url`".into());
        }
        if self.effective_issuer().is_none_or(str::is_empty) && !self.allow_missing_issuer {
            problem(
                "required_issuer",
                "tokens from any issuer would be accepted: set `required_issuer` (or `issuer_url`), \
                 or `allow_missing_issuer = true` to mean it"
                    .into(),
            );
        }
        let audience_set = self.required_audience.as_ref().is_some_and(|a| a.iter().any(|a| !a.is_empty()));
        if !audience_set && !self.allow_missing_audience {
            problem(
                "required_audience",
                "tokens for any audience would be accepted: set `required_audience`, \
                 or `allow_missing_audience = true` to mean it"
                    .into(),
            );
        }
        if self.algorithms.is_empty() {
            problem("algorithms", "at least one algorithm is needed".into());
        }
        for name in &self.algorithms {
            match parse_algorithm(name) {
                Err(reason) => problem("algorithms", reason),
                Ok(alg) if alg.family() == AlgorithmFamily::Hmac => {
                    let hmac_file = self.key_file.is_some() && self.key_type != Some(KeyType::PublicKey);
                    if !hmac_file {
                        problem("algorithms", format!("{name} needs an HMAC secret in `key_file`"));
                    }
                }
                Ok(_) => {}
            }
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            problem("leeway_secs", format!("at most {MAX_LEEWAY_SECS} seconds"));
        }
        if self.principal_field.is_empty() || self.principal_field.iter().any(|f| f.trim().is_empty()) {
            problem("principal_field", "needs at least one claim name, none empty".into());
        }
        if self.groups_field.as_deref().is_some_and(|f| f.trim().is_empty()) {
            problem("groups_field", "must not be empty".into());
        }
        if !(512..=1024 * 1024).contains(&self.max_token_bytes) {
            problem("max_token_bytes", "must be between 512 and 1048576".into());
        }
        if self.jwks_refresh_cooldown_secs == 0 {
            problem("jwks_refresh_cooldown_secs", "must be at least 1".into());
        }
        if self.jwks_cache_ttl_secs < self.jwks_refresh_cooldown_secs {
            problem("jwks_cache_ttl_secs", "must not be shorter than `jwks_refresh_cooldown_secs`".into());
        }
        if self.verified_cache_secs > 3600 {
            problem("verified_cache_secs", "must be at most 3600".into());
        }
        if !(1..=60).contains(&self.http_timeout_secs) {
            problem("http_timeout_secs", "must be between 1 and 60".into());
        }
        problems
    }
}

/// An `http(s)://` URL with a host; plain http only when allowed.
pub(crate) fn check_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http => Ok(()),
        "http" => Err(format!(
            "`{url}` is plain http: keys fetched over it can be forged; use https or set `allow_insecure_http = true`"
        )),
        other => Err(format!("`{url}`: scheme `{other}` is not supported (https only)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> JwtConfig {
        JwtConfig {
            jwks_url: Some("https://idp.example/jwks".into()),
            required_issuer: Some("https://idp.example".into()),
            required_audience: Some(vec!["quiver".into()]),
            ..JwtConfig::default()
        }
    }

    fn keys(problems: Vec<(String, String)>) -> Vec<String> {
        problems.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn a_complete_config_is_valid_and_defaults_are_documented_values() {
        assert_eq!(base().validate(), vec![]);
        let d = JwtConfig::default();
        assert_eq!((d.leeway_secs, d.max_token_bytes, d.jwks_refresh_cooldown_secs), (30, 16384, 60));
        assert_eq!((d.jwks_cache_ttl_secs, d.http_timeout_secs), (3600, 5));
        assert_eq!(d.principal_field, vec!["sub"]);
    }

    #[test]
    fn toml_keys_are_trino_names_in_snake_case() {
        let c: JwtConfig = toml_like(
            r#"{"issuer_url": "https://idp.example/realms/x", "required_audience": "quiver",
                "principal_field": ["preferred_username", "sub"], "groups_field": "groups"}"#,
        );
        assert_eq!(c.required_audience, Some(vec!["quiver".to_string()]));
        assert_eq!(c.effective_issuer(), Some("https://idp.example/realms/x"));
        assert_eq!(c.validate(), vec![]);
        assert!(serde_json::from_str::<JwtConfig>(r#"{"key-file": "x"}"#).is_err(), "unknown keys refused");
    }

    fn toml_like(json: &str) -> JwtConfig {
        serde_json::from_str(json).expect("config")
    }

    #[test]
    fn config_without_issuer_or_audience_is_refused() {
        let c = JwtConfig { required_issuer: None, required_audience: None, ..base() };
        assert_eq!(keys(c.validate()), vec!["required_issuer", "required_audience"]);
        let c = JwtConfig { required_audience: Some(vec!["".into()]), ..base() };
        assert_eq!(keys(c.validate()), vec!["required_audience"]);
        let c = JwtConfig {
            required_issuer: None,
            required_audience: None,
            allow_missing_issuer: true,
            allow_missing_audience: true,
            ..base()
        };
        assert_eq!(c.validate(), vec![]);
    }

    #[test]
    fn exactly_one_key_source() {
        let c = JwtConfig { key_file: Some("k.pem".into()), ..base() };
        assert_eq!(keys(c.validate()), vec!["key_file"]);
        let c = JwtConfig { jwks_url: None, ..base() };
        assert_eq!(keys(c.validate()), vec!["key_file"]);
    }

    #[test]
    fn plain_http_needs_the_explicit_flag() {
        let c = JwtConfig { jwks_url: Some("http://127.0.0.1:1/jwks".into()), ..base() };
        let problems = c.validate();
        assert_eq!(keys(problems.clone()), vec!["jwks_url"]);
        assert!(problems[0].1.contains("allow_insecure_http"));
        let c = JwtConfig { allow_insecure_http: true, ..c };
        assert_eq!(c.validate(), vec![]);
        let c = JwtConfig { jwks_url: Some("file:///etc/jwks".into()), ..base() };
        assert_eq!(keys(c.validate()), vec!["jwks_url"]);
    }

    #[test]
    fn alg_none_and_unknown_algorithms_are_refused() {
        let c = JwtConfig { algorithms: vec!["none".into(), "RS1".into()], ..base() };
        let problems = c.validate();
        assert_eq!(keys(problems.clone()), vec!["algorithms", "algorithms"]);
        assert!(problems[0].1.contains("never"));
        let c = JwtConfig { algorithms: vec![], ..base() };
        assert_eq!(keys(c.validate()), vec!["algorithms"]);
    }

    #[test]
    fn hmac_algorithms_only_with_a_secret_file() {
        let c = JwtConfig { algorithms: vec!["HS256".into()], ..base() };
        assert_eq!(keys(c.validate()), vec!["algorithms"]);
        let file =
            JwtConfig { jwks_url: None, key_file: Some("secret".into()), algorithms: vec!["HS256".into()], ..base() };
        assert_eq!(file.validate(), vec![]);
        let pem = JwtConfig { key_type: Some(KeyType::PublicKey), ..file };
        assert_eq!(keys(pem.validate()), vec!["algorithms"]);
    }

    #[test]
    fn bounds_are_enforced() {
        let c = JwtConfig {
            leeway_secs: 301,
            max_token_bytes: 10,
            jwks_refresh_cooldown_secs: 0,
            http_timeout_secs: 0,
            principal_field: vec![],
            ..base()
        };
        assert_eq!(
            keys(c.validate()),
            vec![
                "leeway_secs",
                "principal_field",
                "max_token_bytes",
                "jwks_refresh_cooldown_secs",
                "http_timeout_secs"
            ]
        );
        let c = JwtConfig { jwks_cache_ttl_secs: 10, ..base() };
        assert_eq!(keys(c.validate()), vec!["jwks_cache_ttl_secs"]);
    }
}
