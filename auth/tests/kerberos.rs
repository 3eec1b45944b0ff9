//! Kerberos/SPNEGO against a real MIT KDC (`tests/servers/kdc.sh`).
//!
//! The MIT library reads its files from the process environment (`KRB5_CONFIG`, `KRB5CCNAME`,
//! `KRB5_KTNAME`), and setting variables in a running test process is unsound. So
//! `kerberos_against_a_real_kdc` starts the KDC, gets alice a ticket, and re-runs this test
//! binary for `checks_in_the_kdc_environment` alone with the KDC's environment; all Kerberos
//! checks run there, in one process, one after the other.
#![cfg(feature = "kerberos")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_MECH_SPNEGO, GSS_NT_HOSTBASED_SERVICE, Oid};
use quiver_auth::{
    AuthError, Authenticator, AuthenticatorChain, Credentials, KerberosAuthenticator, KerberosConfig, UserMapping,
    UserMappingRule,
};

/// Set in the child process: the KDC's directory.
const KDC_DIR_ENV: &str = "QUIVER_TEST_KDC_DIR";

/// Written into the KDC's directory by the child when every check passed.
const DONE_MARKER: &str = "checks.done";

fn kdc_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/kdc.sh")
}

/// A KDC in a temporary directory, stopped on drop.
struct Kdc {
    dir: tempfile::TempDir,
}

impl Kdc {
    fn start() -> Kdc {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(kdc_script()).arg("start").arg(dir.path()).output().expect("run kdc.sh");
        assert!(out.status.success(), "kdc.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
        Kdc { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn kinit(&self, user: &str, ccache: &Path) {
        let out = Command::new(kdc_script())
            .arg("kinit")
            .arg(self.dir.path())
            .arg(user)
            .arg(ccache)
            .output()
            .expect("run kdc.sh kinit");
        assert!(out.status.success(), "kinit {user} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = Command::new(kdc_script()).arg("stop").arg(self.dir.path()).status();
    }
}

#[test]
fn kerberos_against_a_real_kdc() {
    let kdc = Kdc::start();
    let ccache = kdc.path("alice.ccache");
    kdc.kinit("alice", &ccache);
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "checks_in_the_kdc_environment", "--ignored", "--nocapture", "--test-threads=1"])
        .env(KDC_DIR_ENV, kdc.dir.path())
        .env("KRB5_CONFIG", kdc.path("krb5.conf"))
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .env("KRB5_KTNAME", format!("FILE:{}", kdc.path("service.keytab").display()))
        // The replay cache goes next to the KDC, not to /var/tmp.
        .env("KRB5RCACHEDIR", kdc.path("rcache"))
        .status()
        .expect("re-run the test binary");
    assert!(status.success(), "Kerberos checks failed (see the output above)");
    // Guards against the child running no test at all (a renamed test would pass vacuously).
    assert!(kdc.path(DONE_MARKER).exists(), "the child process did not run checks_in_the_kdc_environment");
}

/// A fresh initiator token from alice's ccache for `target` (`service@host`), with mutual
/// authentication requested, and the context to finish it.
fn client_token(target: &str, mech: Oid<'static>) -> (ClientCtx, Vec<u8>) {
    let name = Name::new(target.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE)).expect("target name");
    let mut ctx = ClientCtx::new(None, name, CtxFlags::GSS_C_MUTUAL_FLAG, Some(mech));
    let token = ctx.step(None, None).unwrap_or_else(|e| panic!("initiator for {target}: {e}")).expect("a token");
    (ctx, token.to_vec())
}

fn negotiate(token: &[u8]) -> Credentials {
    Credentials::Negotiate(token.to_vec())
}

async fn expect_denied(auth: &KerberosAuthenticator, token: &[u8], what: &str) -> String {
    match auth.authenticate(&negotiate(token)).await {
        Err(AuthError::Denied(detail)) => {
            println!("{what}: denied: {detail}");
            detail
        }
        other => panic!("{what}: expected Denied, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "run by kerberos_against_a_real_kdc in a child process with the KDC's environment"]
async fn checks_in_the_kdc_environment() {
    let Some(dir) = std::env::var_os(KDC_DIR_ENV).map(PathBuf::from) else {
        eprintln!("{KDC_DIR_ENV} is not set: run kerberos_against_a_real_kdc instead");
        return;
    };
    let keytab = dir.join("service.keytab");
    let config = KerberosConfig {
        keytab: Some(keytab.clone()),
        krb5_config: Some(dir.join("krb5.conf")),
        max_token_bytes: 16 * 1024,
        ..Default::default()
    };
    let auth = Arc::new(KerberosAuthenticator::new(&config).expect("authenticator"));
    assert_eq!(auth.name(), "kerberos");

    // SPNEGO token, mutual authentication: the reply completes the initiator's context.
    let (mut client, token) = client_token("HTTP@localhost", GSS_MECH_SPNEGO);
    let identity = auth.authenticate(&negotiate(&token)).await.expect("accepted").expect("an identity");
    assert_eq!(identity.user, "alice@QUIVER.TEST");
    assert_eq!(identity.method, "kerberos");
    assert_eq!(identity.attributes.get("principal").map(String::as_str), Some("alice@QUIVER.TEST"));
    assert_eq!(identity.attributes.get("realm").map(String::as_str), Some("QUIVER.TEST"));
    let reply = identity.reply_token.clone().expect("a mutual authentication reply token");
    assert!(client.step(Some(&reply), None).expect("initiator accepts the reply").is_none());
    assert!(client.is_complete());

    // The same token again: MIT's replay cache refuses it.
    let detail = expect_denied(&auth, &token, "replayed SPNEGO token").await;
    assert!(detail.to_lowercase().contains("replay"), "{detail}");

    // A raw Kerberos 5 token (no SPNEGO wrapper) is accepted too.
    let (mut client, token) = client_token("HTTP@localhost", GSS_MECH_KRB5);
    let identity = auth.authenticate(&negotiate(&token)).await.expect("accepted").expect("an identity");
    assert_eq!(identity.user, "alice@QUIVER.TEST");
    let reply = identity.reply_token.expect("a mutual authentication reply token");
    assert!(client.step(Some(&reply), None).expect("initiator accepts the reply").is_none());

    // Through a chain with Trino-style user mapping: alice@QUIVER.TEST -> alice.
    let rule = UserMappingRule {
        pattern: r"(.*)@QUIVER\.TEST".into(),
        user: "$1".into(),
        allow: true,
        case: Default::default(),
    };
    let chain = AuthenticatorChain::new(vec![auth.clone() as Arc<dyn Authenticator>])
        .with_mapping(UserMapping::new(&[rule]).expect("mapping"));
    let (_, token) = client_token("HTTP@localhost", GSS_MECH_SPNEGO);
    let identity = chain.authenticate(&negotiate(&token)).await.expect("chain accepts");
    assert_eq!(identity.user, "alice");
    assert_eq!(identity.attributes.get("principal").map(String::as_str), Some("alice@QUIVER.TEST"));

    // Several acceptances at once, each on its own blocking thread.
    let tokens: Vec<Vec<u8>> = (0..6).map(|_| client_token("HTTP@localhost", GSS_MECH_SPNEGO).1).collect();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authenticate(&Credentials::Negotiate(t)).await })
        })
        .collect();
    for task in tasks {
        let identity = task.await.expect("join").expect("accepted").expect("an identity");
        assert_eq!(identity.user, "alice@QUIVER.TEST");
    }

    // A ticket for a service principal that is not in the keytab.
    let (_, token) = client_token("HTTP@otherhost", GSS_MECH_SPNEGO);
    expect_denied(&auth, &token, "ticket for HTTP/otherhost").await;

    // Truncated, garbage, empty and oversized tokens: refused, no panic.
    let (_, token) = client_token("HTTP@localhost", GSS_MECH_SPNEGO);
    expect_denied(&auth, &token[..token.len() / 2], "truncated token").await;
    expect_denied(&auth, &token[..token.len() - 1], "token missing its last byte").await;
    let mut flipped = token.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    expect_denied(&auth, &flipped, "token with a flipped byte").await;
    expect_denied(&auth, b"hello", "garbage").await;
    expect_denied(&auth, &[0x60, 0x82, 0xff, 0xff, 0x06, 0x06, 0x2b, 0x06], "bogus SPNEGO header").await;
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    expect_denied(&auth, &noise, "4 KiB of noise").await;
    expect_denied(&auth, &[], "empty token").await;
    let detail = expect_denied(&auth, &vec![0x60; 16 * 1024 + 1], "oversized token").await;
    assert!(detail.contains("max_token_bytes"), "{detail}");

    // Other kinds of credentials are not Kerberos's business.
    let basic = Credentials::Basic { user: "alice".into(), password: "alice-pw".into() };
    assert_eq!(auth.authenticate(&basic).await, Ok(None));
    assert_eq!(auth.authenticate(&Credentials::None).await, Ok(None));

    // A pinned host name: the right one works, one without a key in the keytab fails at start.
    let pinned = KerberosConfig { hostname: Some("localhost".into()), ..config.clone() };
    let pinned = KerberosAuthenticator::new(&pinned).expect("HTTP/localhost is in the keytab");
    let (_, token) = client_token("HTTP@localhost", GSS_MECH_SPNEGO);
    let identity = pinned.authenticate(&negotiate(&token)).await.expect("accepted").expect("an identity");
    assert_eq!(identity.user, "alice@QUIVER.TEST");
    let other = KerberosConfig { hostname: Some("otherhost".into()), ..config.clone() };
    let err = KerberosAuthenticator::new(&other).expect_err("no key for HTTP/otherhost");
    println!("pinned to otherhost: {err}");
    assert!(err.contains("HTTP@otherhost") && err.contains(&keytab.display().to_string()), "{err}");

    // Another service name: HTTP tickets are refused even though the keytab decrypts them.
    let quiver = KerberosConfig { service_name: "quiver".into(), ..config.clone() };
    let quiver = KerberosAuthenticator::new(&quiver).expect("authenticator for any quiver/ host");
    let (_, token) = client_token("HTTP@localhost", GSS_MECH_SPNEGO);
    let detail = expect_denied(&quiver, &token, "HTTP ticket for service quiver").await;
    assert!(detail.contains("not a quiver/ principal"), "{detail}");

    // A keytab the environment does not select cannot be used silently.
    let copy = dir.join("copy.keytab");
    std::fs::copy(&keytab, &copy).expect("copy keytab");
    let elsewhere = KerberosConfig { keytab: Some(copy), ..config.clone() };
    let err = KerberosAuthenticator::new(&elsewhere).expect_err("keytab not selected by KRB5_KTNAME");
    assert!(err.contains("KRB5_KTNAME=FILE:") && err.contains("copy.keytab"), "{err}");

    // Optional: the token tests/servers/negotiate_token.py makes (Python `gssapi`), which the
    // end-to-end tests send through the gateway. QUIVER_GSSAPI_PYTHON names a python with it.
    if let Some(python) = std::env::var_os("QUIVER_GSSAPI_PYTHON") {
        let script = kdc_script().with_file_name("negotiate_token.py");
        let out = Command::new(python).arg(script).arg("HTTP@localhost").output().expect("run negotiate_token.py");
        assert!(out.status.success(), "negotiate_token.py: {}", String::from_utf8_lossy(&out.stderr));
        let b64 = String::from_utf8(out.stdout).expect("utf-8");
        let token = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim()).expect("base64");
        let identity = auth.authenticate(&negotiate(&token)).await.expect("accepted").expect("an identity");
        assert_eq!(identity.user, "alice@QUIVER.TEST");
        println!("negotiate_token.py: token accepted");
    }

    std::fs::write(dir.join(DONE_MARKER), b"ok").expect("write marker");
}
