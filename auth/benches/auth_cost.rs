//! What authentication costs per call, in-process, measured side by side in one run.
//!
//!   cargo bench -p quiver-auth --bench auth_cost [-- --iters N] [--no-ldap]
//!
//! Each case runs what the gateway's auth layer runs per call after parsing the header:
//! - a gateway session token (`Bearer qv1...`): what every call after the login costs;
//! - an external JWT (RS256 and ES256, key from a PEM file): a client that keeps sending the
//!   same IdP token (served from the verified-token cache) and the full signature check;
//! - LDAP with a login-cache hit vs a miss (a real bind against slapd from tests/servers);
//! - the password file (argon2id), for scale.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quiver_auth::{
    Authenticator, AuthenticatorChain, Credentials, JwtAuthenticator, JwtConfig, LdapAuthenticator, LdapConfig,
    PasswordFileAuthenticator, SessionTokens,
};

struct Args {
    /// Calls per case (LDAP misses use a tenth of it, argon2 a hundredth).
    iters: usize,
    /// Skip the LDAP cases (they start slapd through tests/servers/slapd.sh).
    no_ldap: bool,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args { iters: 20_000, no_ldap: false };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--iters" => args.iters = it.next().and_then(|v| v.parse().ok()).unwrap_or(args.iters),
                "--no-ldap" => args.no_ldap = true,
                _ => {} // cargo bench passes `--bench`
            }
        }
        args
    }
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
    let identity = quiver_auth::Identity::new("alice", "ldap").with_groups(vec!["analysts".into(), "privacy".into()]);
    let bearer = tokens.issue(&identity, "session-1");
    rows.push(
        measure("session token (Bearer qv1…)", n, || async {
            let claims = tokens.verify(&bearer)?;
            std::hint::black_box(SessionTokens::identity(&claims));
            Ok(())
        })
        .await?,
    );

    // External JWTs: a client that sends the same IdP token on every call (verified-token
    // cache hit) vs the signature check every call (cache off), which is also the cost of the
    // first call with a new token.
    for (alg, genpkey) in [
        (jsonwebtoken::Algorithm::RS256, &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..]),
        (jsonwebtoken::Algorithm::ES256, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..]),
    ] {
        let (private, public) = key_pair(dir.path(), &format!("{alg:?}"), genpkey)?;
        let bearer = Credentials::Bearer(sign(alg, &private)?);
        for (cached, case) in [
            (
                true,
                if alg == jsonwebtoken::Algorithm::RS256 {
                    "external JWT RS256, repeated token"
                } else {
                    "external JWT ES256, repeated token"
                },
            ),
            (
                false,
                if alg == jsonwebtoken::Algorithm::RS256 {
                    "external JWT RS256 (2048-bit), verified every call"
                } else {
                    "external JWT ES256, verified every call"
                },
            ),
        ] {
            let config = JwtConfig { verified_cache_secs: if cached { 60 } else { 0 }, ..jwt_config(public.clone()) };
            let jwt = JwtAuthenticator::new(&config).map_err(anyhow::Error::msg)?;
            let chain = AuthenticatorChain::new(vec![Arc::new(jwt) as Arc<dyn Authenticator>]);
            let iters = if cached { n } else { (n / 4).max(10) };
            rows.push(
                measure(case, iters, || async {
                    chain.authenticate(&bearer).await.map_err(|f| anyhow::anyhow!("{:?}", f.error))?;
                    Ok(())
                })
                .await?,
            );
        }
    }

    // LDAP: login cache hit vs a real bind.
    if !args.no_ldap {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/slapd.sh");
        let slapd = Slapd { dir: tempfile::tempdir()?, script };
        let status =
            std::process::Command::new("bash").arg(&slapd.script).arg("start").arg(slapd.dir.path()).status()?;
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
    std::fs::write(
        &file,
        format!("alice:{}\n", quiver_auth::hash_password("alice-secret").map_err(anyhow::Error::msg)?),
    )?;
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
