//! Traps with keys from a file: no network. JWKS and discovery are in `auth/tests/jwt.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header as JwtHeader, encode, get_current_timestamp};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "quiver";

/// An RSA key pair made by the `openssl` command once per test binary: (private PEM, public PEM).
fn rsa_pair() -> &'static (String, String) {
    static PAIR: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        let run = |args: &[&str], input: Option<&[u8]>| {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("openssl");
            if let Some(input) = input {
                child.stdin.take().expect("stdin").write_all(input).expect("write");
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("openssl output");
            assert!(out.status.success(), "openssl {args:?}");
            String::from_utf8(out.stdout).expect("utf8")
        };
        let private = run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], None);
        let public = run(&["pkey", "-pubout"], Some(private.as_bytes()));
        (private, public)
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    key_file: PathBuf,
}

fn fixture(content: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, content).expect("write key");
    Fixture { _dir: dir, key_file }
}

fn config(key_file: &std::path::Path) -> JwtConfig {
    JwtConfig {
        key_file: Some(key_file.to_path_buf()),
        required_issuer: Some(ISSUER.into()),
        required_audience: Some(vec![AUDIENCE.into()]),
        ..JwtConfig::default()
    }
}

fn claims(extra: Value) -> Value {
    let now = get_current_timestamp();
    let mut c = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300});
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(rsa_pair().0.as_bytes()).expect("rsa key");
    encode(&JwtHeader::new(Algorithm::RS256), claims, &key).expect("sign")
}

fn bearer(token: &str) -> Credentials {
    Credentials::Bearer(token.to_string())
}

async fn check(auth: &JwtAuthenticator, token: &str) -> Result<Option<Identity>, AuthError> {
    auth.authenticate(&bearer(token)).await
}

fn rsa_auth() -> (Fixture, JwtAuthenticator) {
    let f = fixture(&rsa_pair().1);
    let auth = JwtAuthenticator::new(&config(&f.key_file)).expect("authenticator");
    (f, auth)
}

fn denied_with(result: Result<Option<Identity>, AuthError>, needle: &str) {
    match result {
        Err(AuthError::Denied(detail)) => assert!(detail.contains(needle), "`{detail}` lacks `{needle}`"),
        other => panic!("expected Denied({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_rs256_token_gives_the_identity() {
    let (_f, auth) = rsa_auth();
    let id = check(&auth, &rs256(&claims(json!({})))).await.expect("ok").expect("identity");
    assert_eq!(id.user, "alice");
    assert_eq!(id.method, "jwt");
    assert_eq!(id.attributes.get("iss").map(String::as_str), Some(ISSUER));
    assert_eq!(id.attributes.get("sub").map(String::as_str), Some("alice"));
    assert_eq!(auth.name(), "jwt");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (_f, auth) = rsa_auth();
    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
        denied_with(check(&auth, &format!("{header}.{payload}.")).await, "not allowed");
    }
    // And the config cannot allow it.
    let f = fixture(&rsa_pair().1);
    let err = JwtAuthenticator::new(&JwtConfig { algorithms: vec!["none".into()], ..config(&f.key_file) })
        .expect_err("refused");
    assert!(err.contains("never"), "{err}");
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let public_pem = rsa_pair().1.clone();
    let forged = encode(
        &JwtHeader::new(Algorithm::HS256),
        &claims(json!({"sub": "admin"})),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .expect("sign");
    // Default allow-list: HS256 is not on it.
    let (f, auth) = rsa_auth();
    denied_with(check(&auth, &forged).await, "not allowed");
    // Asking for HS256 next to a public key file is refused at start-up ...
    let err =
        JwtAuthenticator::new(&JwtConfig { algorithms: vec!["RS256".into(), "HS256".into()], ..config(&f.key_file) })
            .expect_err("refused");
    assert!(err.contains("public key"), "{err}");
    // ... and so is reading the PEM file as an HMAC secret.
    for key_type in [KeyType::HmacRaw, KeyType::HmacBase64] {
        let err = JwtAuthenticator::new(&JwtConfig {
            algorithms: vec!["HS256".into()],
            key_type: Some(key_type),
            ..config(&f.key_file)
        })
        .expect_err("refused");
        assert!(err.contains("never used as an HMAC secret"), "{err}");
    }
}

#[tokio::test]
async fn expired_token_beyond_leeway_is_refused() {
    let (_f, auth) = rsa_auth();
    let now = get_current_timestamp();
    // Default leeway 30 s.
    let expired = rs256(&claims(json!({"exp": now - 31 - 5})));
    denied_with(check(&auth, &expired).await, "expired");
    let within = rs256(&claims(json!({"exp": now - 10})));
    assert!(check(&auth, &within).await.expect("within leeway").is_some());
    let no_exp = {
        let mut c = claims(json!({}));
        c.as_object_mut().map(|c| c.remove("exp"));
        rs256(&c)
    };
    denied_with(check(&auth, &no_exp).await, "`exp`");
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let (_f, auth) = rsa_auth();
    let now = get_current_timestamp();
    denied_with(check(&auth, &rs256(&claims(json!({"nbf": now + 120})))).await, "nbf");
    assert!(check(&auth, &rs256(&claims(json!({"nbf": now + 10})))).await.expect("within leeway").is_some());
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let (_f, auth) = rsa_auth();
    denied_with(check(&auth, &rs256(&claims(json!({"iss": "https://evil.example"})))).await, "issuer");
    let mut c = claims(json!({}));
    c.as_object_mut().map(|c| c.remove("iss"));
    denied_with(check(&auth, &rs256(&c)).await, "`iss`");
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let (_f, auth) = rsa_auth();
    denied_with(check(&auth, &rs256(&claims(json!({"aud": "other"})))).await, "audience");
    // A list containing ours is fine.
    assert!(check(&auth, &rs256(&claims(json!({"aud": ["other", AUDIENCE]})))).await.expect("ok").is_some());
    let mut c = claims(json!({}));
    c.as_object_mut().map(|c| c.remove("aud"));
    denied_with(check(&auth, &rs256(&c)).await, "`aud`");
}

#[tokio::test]
async fn forged_signature_is_refused() {
    let (_f, auth) = rsa_auth();
    let token = rs256(&claims(json!({})));
    // Swap the payload for one naming another user, keep the signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    let evil = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "admin"})).to_string());
    parts[1] = &evil;
    denied_with(check(&auth, &parts.join(".")).await, "signature");
}

#[tokio::test]
async fn megabyte_of_dots_is_rejected_cheaply() {
    let (_f, auth) = rsa_auth();
    let dots = ".".repeat(1024 * 1024);
    let credentials = bearer(&dots);
    let started = Instant::now();
    for _ in 0..1000 {
        denied_with(auth.authenticate(&credentials).await, "max_token_bytes");
    }
    // A length check per call: far below a millisecond each even in a debug build.
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
    // Within the size limit, a token of many dots or odd bytes is not a JWT: left to others.
    assert_eq!(check(&auth, &".".repeat(1000)).await, Ok(None));
    assert_eq!(check(&auth, "a.b.c.d").await, Ok(None));
    assert_eq!(check(&auth, "a b.c.d").await, Ok(None));
}

#[tokio::test]
async fn non_jwt_bearers_and_other_credentials_are_left_to_other_methods() {
    let (_f, auth) = rsa_auth();
    assert_eq!(check(&auth, "qv1.eyJ1IjoiYSJ9.c2ln").await, Ok(None));
    assert_eq!(check(&auth, "opaque-token").await, Ok(None));
    assert_eq!(check(&auth, "bm90.anNvbg.c2ln").await, Ok(None), "header not JSON");
    assert_eq!(auth.authenticate(&Credentials::None).await, Ok(None));
    let basic = Credentials::Basic { user: "alice".into(), password: "pw".into() };
    assert_eq!(auth.authenticate(&basic).await, Ok(None));
}

#[tokio::test]
async fn principal_field_is_tried_in_order() {
    let f = fixture(&rsa_pair().1);
    let auth = JwtAuthenticator::new(&JwtConfig {
        principal_field: vec!["preferred_username".into(), "ext.login".into(), "sub".into()],
        ..config(&f.key_file)
    })
    .expect("authenticator");
    let user = |extra| {
        let auth = &auth;
        async move { check(auth, &rs256(&claims(extra))).await.map(|id| id.map(|id| (id.user, id.attributes))) }
    };
    let (name, attrs) = user(json!({"preferred_username": "bob"})).await.expect("ok").expect("id");
    assert_eq!(name, "bob");
    assert_eq!(attrs.get("preferred_username").map(String::as_str), Some("bob"));
    // Empty or non-string claims are skipped; a dotted path looks inside objects.
    let (name, _) = user(json!({"preferred_username": "", "ext": {"login": "carol"}})).await.expect("ok").expect("id");
    assert_eq!(name, "carol");
    let (name, _) = user(json!({"preferred_username": 42})).await.expect("ok").expect("id");
    assert_eq!(name, "alice");
    let mut c = claims(json!({}));
    c.as_object_mut().map(|c| c.remove("sub"));
    denied_with(check(&auth, &rs256(&c)).await, "principal");
}

#[tokio::test]
async fn groups_as_array_and_as_string() {
    let f = fixture(&rsa_pair().1);
    let auth = JwtAuthenticator::new(&JwtConfig { groups_field: Some("groups".into()), ..config(&f.key_file) })
        .expect("authenticator");
    let groups = |extra| {
        let auth = &auth;
        async move { check(auth, &rs256(&claims(extra))).await.expect("ok").expect("id").groups }
    };
    assert_eq!(groups(json!({"groups": ["analysts", "eu", 7]})).await, vec!["analysts", "eu"]);
    assert_eq!(groups(json!({"groups": "analysts eu,admins"})).await, vec!["analysts", "eu", "admins"]);
    assert_eq!(groups(json!({})).await, Vec::<String>::new());
}

#[tokio::test]
async fn hmac_secret_file_works_for_hs256() {
    let secret = [42u8; 32];
    let f = fixture(&(base64::engine::general_purpose::STANDARD.encode(secret) + "\n"));
    let auth = JwtAuthenticator::new(&JwtConfig { algorithms: vec!["HS256".into()], ..config(&f.key_file) })
        .expect("authenticator");
    let token = encode(&JwtHeader::new(Algorithm::HS256), &claims(json!({})), &EncodingKey::from_secret(&secret))
        .expect("sign");
    assert_eq!(check(&auth, &token).await.expect("ok").expect("id").user, "alice");
    let wrong = encode(&JwtHeader::new(Algorithm::HS256), &claims(json!({})), &EncodingKey::from_secret(&[1u8; 32]))
        .expect("sign");
    denied_with(check(&auth, &wrong).await, "signature");
    // An RS256 token is not verified with the secret.
    denied_with(check(&auth, &rs256(&claims(json!({})))).await, "not allowed");
    // The default allow-list has no HMAC algorithm: the secret file alone is refused.
    let err = JwtAuthenticator::new(&config(&f.key_file)).expect_err("refused");
    assert!(err.contains("has none for it"), "{err}");
}

#[tokio::test]
async fn ec_and_ed25519_key_files_work() {
    for (alg, signing) in [(Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256), (Algorithm::EdDSA, &rcgen::PKCS_ED25519)]
    {
        let pair = rcgen::KeyPair::generate_for(signing).expect("keygen");
        let f = fixture(&pair.public_key_pem());
        let auth = JwtAuthenticator::new(&config(&f.key_file)).expect("authenticator");
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()),
            _ => EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()),
        }
        .expect("encoding key");
        let token = encode(&JwtHeader::new(alg), &claims(json!({})), &key).expect("sign");
        assert_eq!(check(&auth, &token).await.expect("ok").expect("id").user, "alice", "{alg:?}");
        denied_with(check(&auth, &rs256(&claims(json!({})))).await, "another type");
    }
}

#[tokio::test]
async fn crit_headers_are_refused() {
    let (_f, auth) = rsa_auth();
    let mut header = JwtHeader::new(Algorithm::RS256);
    header.extras.insert("crit", vec!["exp"]);
    let key = EncodingKey::from_rsa_pem(rsa_pair().0.as_bytes()).expect("rsa key");
    let token = encode(&header, &claims(json!({})), &key).expect("sign");
    denied_with(check(&auth, &token).await, "crit");
}

#[test]
fn precheck_counts_dots_and_alphabet() {
    assert_eq!(precheck("a.b.c", 100), Ok(true));
    assert_eq!(precheck("a.b.", 100), Ok(true), "unsigned tokens go on to be refused by alg");
    assert_eq!(precheck(".b.c", 100), Ok(false));
    assert_eq!(precheck("a.b", 100), Ok(false));
    assert_eq!(precheck("a+b.c.d", 100), Ok(false));
    assert!(precheck(&"a".repeat(101), 100).is_err());
}

#[tokio::test]
async fn verified_tokens_are_cached_by_hash_but_never_past_their_expiry() {
    let (_f, auth) = rsa_auth();
    let token = rs256(&claims(json!({})));
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let cache = auth.verified.as_ref().expect("cache on by default");
    assert!(!cache.contains_key(&digest));
    assert_eq!(check(&auth, &token).await.expect("ok").expect("identity").user, "alice");
    assert!(cache.contains_key(&digest), "a verified token is remembered");
    assert_eq!(check(&auth, &token).await.expect("ok").expect("identity").user, "alice");

    // A different (forged) token has another hash: it is verified and refused. Forged by
    // putting mallory's claims under alice's signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mallory = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "mallory"})).to_string());
    let forged = format!("{}.{mallory}.{}", parts[0], parts[2]);
    denied_with(check(&auth, &forged).await, "signature");

    // An entry whose token has expired is not served: the token is verified again, and an
    // expired token is refused. (Planted by hand: the real token's exp is minutes away.)
    let forged_digest: [u8; 32] = Sha256::digest(forged.as_bytes()).into();
    cache.insert(forged_digest, Arc::new((Identity::new("mallory", "jwt"), get_current_timestamp() - 1)));
    denied_with(check(&auth, &forged).await, "signature");

    let off = fixture(&rsa_pair().1);
    let uncached =
        JwtAuthenticator::new(&JwtConfig { verified_cache_secs: 0, ..config(&off.key_file) }).expect("authenticator");
    assert!(uncached.verified.is_none());
    assert_eq!(check(&uncached, &token).await.expect("ok").expect("identity").user, "alice");
}
