//! `quiver-auth-bench`: what authentication costs per call, in-process, measured side by side.
//!
//!   cargo run --release -p quiver-tests --bin quiver-auth-bench -- [--iters N]
//!
//! Each case runs the gateway's real per-call path (`AuthState::authenticate` on a header map,
//! as the tower layer does for every Flight call) or the method itself:
//! - a gateway session token (`Bearer qv1...`): what every call after the login costs;
//! - an external JWT (RS256 and ES256, key from a PEM file): every call when a client keeps
//!   sending its IdP token;
//! - LDAP with a login-cache hit vs a miss (a real bind against slapd from tests/servers);
//! - the password file (argon2id), for scale.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use http::HeaderMap;
use quiver_auth::{
    Authenticator, AuthenticatorChain, Credentials, JwtAuthenticator, JwtConfig, LdapAuthenticator, LdapConfig,
    PasswordFileAuthenticator, SessionTokens,
};
use quiver_gateway::auth_layer::AuthState;
use quiver_gateway::metrics::Metrics;

#[derive(Parser)]
struct Args {
    /// Calls per case (LDAP misses and argon2 use a tenth of it).
    #[arg(long, default_value_t = 20_000)]
    iters: usize,
    /// Skip the LDAP cases (they start slapd through tests/servers/slapd.sh).
    #[arg(long)]
    no_ldap: bool,
}

struct Row {
    case: &'static str,
    hist: Histogram<u64>,
}

async fn measure<F, Fut>(case: &'static str, iters: usize, mut f: F) -> anyhow::Result<Row>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..(iters / 10).max(1) {
        f().await?; // warm-up
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for _ in 0..iters {
        let start = Instant::now();
        f().await?;
        hist.record(start.elapsed().as_nanos() as u64)?;
    }
    Ok(Row { case, hist })
}

fn header(value: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value.parse()?);
    Ok(headers)
}

fn state(methods: Vec<Arc<dyn Authenticator>>, tokens: SessionTokens) -> AuthState {
    AuthState::new(AuthenticatorChain::new(methods), tokens, Arc::new(Metrics::new()))
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("openssl").args(args).stderr(std::process::Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "openssl {args:?} failed");
    Ok(())
}

/// A key pair via openssl; returns (private PEM, public PEM path).
fn key_pair(dir: &Path, name: &str, genpkey: &[&str]) -> anyhow::Result<(Vec<u8>, std::path::PathBuf)> {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub.pem"));
    let private_s = private.to_string_lossy().to_string();
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", &private_s]);
    openssl(&args)?;
    openssl(&["pkey", "-in", &private_s, "-pubout", "-out", &public.to_string_lossy()])?;
    Ok((std::fs::read(&private)?, public))
}

fn jwt_config(public: std::path::PathBuf) -> JwtConfig {
    JwtConfig {
        key_file: Some(public),
        required_issuer: Some("https://idp.bench".into()),
        required_audience: Some(vec!["quiver".into()]),
        groups_field: Some("groups".into()),
        ..JwtConfig::default()
    }
}

fn sign(alg: jsonwebtoken::Algorithm, private: &[u8]) -> anyhow::Result<String> {
    let key = match alg {
        jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(private)?,
        _ => jsonwebtoken::EncodingKey::from_ec_pem(private)?,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": "https://idp.bench", "aud": "quiver", "sub": "alice", "groups": ["analysts"],
        "iat": now, "exp": now + 3600,
    });
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key)?)
}

struct Slapd {
    dir: tempfile::TempDir,
    script: std::path::PathBuf,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(&self.script).arg("stop").arg(self.dir.path()).status();
    }
}

fn read_env(path: &Path) -> anyhow::Result<std::collections::HashMap<String, String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.iters;
    let dir = tempfile::tempdir()?;
    let tokens = SessionTokens::new(SessionTokens::random_key(), Duration::from_secs(3600));
    let mut rows = Vec::new();

    // Session token: the path of every call after a login.
    let token_state = state(vec![], tokens.clone());
    let identity = quiver_auth::Identity::new("alice", "ldap").with_groups(vec!["analysts".into(), "privacy".into()]);
    let bearer = header(&format!("Bearer {}", tokens.issue(&identity, "session-1")))?;
    rows.push(
        measure("session token (Bearer qv1…), gateway path", n, || async {
            token_state.authenticate(&bearer, None, false).await.map_err(|f| anyhow::anyhow!("{:?}", f.error))?;
            Ok(())
        })
        .await?,
    );

    // External JWTs verified on every call.
    for (case, alg, genpkey) in [
        ("external JWT RS256 (2048-bit), gateway path", jsonwebtoken::Algorithm::RS256, &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..]),
        ("external JWT ES256, gateway path", jsonwebtoken::Algorithm::ES256, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..]),
    ] {
        let name = format!("{alg:?}");
        let (private, public) = key_pair(dir.path(), &name, genpkey)?;
        let jwt = JwtAuthenticator::new(&jwt_config(public)).map_err(anyhow::Error::msg)?;
        let jwt_state = state(vec![Arc::new(jwt)], tokens.clone());
        let headers = header(&format!("Bearer {}", sign(alg, &private)?))?;
        rows.push(
            measure(case, n, || async {
                jwt_state.authenticate(&headers, None, false).await.map_err(|f| anyhow::anyhow!("{:?}", f.error))?;
                Ok(())
            })
            .await?,
        );
    }

    // LDAP: login cache hit vs a real bind.
    if !args.no_ldap {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/slapd.sh");
        let slapd = Slapd { dir: tempfile::tempdir()?, script };
        let status = std::process::Command::new("bash").arg(&slapd.script).arg("start").arg(slapd.dir.path()).status()?;
        anyhow::ensure!(status.success(), "tests/servers/slapd.sh start failed");
        let env = read_env(&slapd.dir.path().join("env"))?;
        let config = |cache_ttl_secs| LdapConfig {
            url: env["LDAPS_URL"].clone(),
            ca_file: Some(env["LDAP_CA_FILE"].clone().into()),
            user_bind_pattern: Some(format!("uid=${{USER}},ou=people,{}", env["LDAP_BASE_DN"])),
            cache_ttl_secs,
            ..LdapConfig::default()
        };
        let alice = Credentials::Basic { user: "alice".into(), password: env["LDAP_ALICE_PASSWORD"].clone() };
        let cached = LdapAuthenticator::new(config(600)).map_err(anyhow::Error::msg)?;
        let uncached = LdapAuthenticator::new(config(0)).map_err(anyhow::Error::msg)?;
        rows.push(
            measure("LDAP login, cache hit", n, || async {
                cached.authenticate(&alice).await?;
                Ok(())
            })
            .await?,
        );
        rows.push(
            measure("LDAP login, cache miss (ldaps bind)", (n / 10).max(10), || async {
                uncached.authenticate(&alice).await?;
                Ok(())
            })
            .await?,
        );
    }

    // The password file, for scale (argon2id by design costs milliseconds).
    let file = dir.path().join("password.db");
    std::fs::write(&file, format!("alice:{}\n", quiver_auth::hash_password("alice-secret").map_err(anyhow::Error::msg)?))?;
    let passwords = PasswordFileAuthenticator::load(&file).map_err(anyhow::Error::msg)?;
    let alice = Credentials::Basic { user: "alice".into(), password: "alice-secret".into() };
    rows.push(
        measure("password file (argon2id)", (n / 100).max(10), || async {
            passwords.authenticate(&alice).await?;
            Ok(())
        })
        .await?,
    );

    println!("| case | calls | p50 | p99 |");
    println!("|---|---|---|---|");
    for row in rows {
        let us = |q: f64| row.hist.value_at_quantile(q) as f64 / 1000.0;
        println!("| {} | {} | {:.1} µs | {:.1} µs |", row.case, row.hist.len(), us(0.5), us(0.99));
    }
    Ok(())
}
