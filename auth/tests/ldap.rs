//! The LDAP authenticator against a real OpenLDAP server, started per test by
//! `tests/servers/slapd.sh` (test users and groups are described there).
//!
//! slapd must be installed (`apt-get install slapd ldap-utils`; `scripts/test` does it): without
//! it these tests fail rather than skip, so a missing package cannot pass for a green run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use quiver_auth::ldap::Secret;
use quiver_auth::{AuthError, Authenticator, Credentials, Identity, LdapAuthenticator, LdapConfig};

/// A running slapd; stopped on drop.
struct Slapd {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/slapd.sh")
}

impl Slapd {
    fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/slapd").exists(),
            "slapd is not installed: run `apt-get install slapd ldap-utils` (scripts/test installs it); \
             the LDAP tests need a real server"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash").arg(script()).arg("start").arg(dir.path()).output().expect("run slapd.sh");
        assert!(
            out.status.success(),
            "tests/servers/slapd.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("env")).expect("slapd env file");
        let env = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Slapd { dir, env }
    }

    fn var(&self, key: &str) -> String {
        self.env.get(key).cloned().unwrap_or_else(|| panic!("{key} missing from slapd env"))
    }

    fn stop(&self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).status();
    }

    /// `host:port` of a URL key, as error messages name it.
    fn server(&self, key: &str) -> String {
        self.var(key).rsplit("//").next().unwrap_or_default().to_string()
    }

    /// Direct bind over ldaps://, groups by `member=${USER_DN}`.
    fn direct(&self) -> LdapConfig {
        LdapConfig {
            url: self.var("LDAPS_URL"),
            ca_file: Some(self.var("LDAP_CA_FILE").into()),
            user_bind_pattern: Some("uid=${USER},ou=people,dc=quiver,dc=test".into()),
            group_base_dn: Some("ou=groups,dc=quiver,dc=test".into()),
            group_search_filter: Some("(&(objectClass=groupOfNames)(member=${USER_DN}))".into()),
            connect_timeout_secs: 3,
            read_timeout_secs: 3,
            cache_ttl_secs: 0,
            ..LdapConfig::default()
        }
    }

    /// Search then bind with the service account over ldap:// + StartTLS.
    fn search(&self) -> LdapConfig {
        LdapConfig {
            url: self.var("LDAP_URL"),
            start_tls: true,
            user_bind_pattern: None,
            bind_dn: Some(self.var("LDAP_BIND_DN")),
            bind_password: Some(Secret::new(self.var("LDAP_BIND_PASSWORD"))),
            user_base_dn: Some("ou=people,dc=quiver,dc=test".into()),
            ..self.direct()
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn basic(user: &str, password: &str) -> Credentials {
    Credentials::Basic { user: user.into(), password: password.into() }
}

fn auth(config: LdapConfig) -> LdapAuthenticator {
    LdapAuthenticator::new(config).expect("valid LDAP config")
}

async fn login(auth: &LdapAuthenticator, user: &str, password: &str) -> Result<Identity, AuthError> {
    auth.authenticate(&basic(user, password)).await.map(|id| id.expect("LDAP handles Basic credentials"))
}

fn sorted(mut groups: Vec<String>) -> Vec<String> {
    groups.sort();
    groups
}

fn assert_denied(result: Result<Identity, AuthError>, what: &str) -> String {
    match result {
        Err(AuthError::Denied(detail)) => detail,
        other => panic!("{what}: expected Denied, got {other:?}"),
    }
}

#[tokio::test]
async fn direct_bind_over_ldaps_with_groups() {
    let slapd = Slapd::start();
    let auth = auth(slapd.direct());
    let alice = login(&auth, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect("alice");
    assert_eq!(alice.user, "alice");
    assert_eq!(alice.method, "ldap");
    assert_eq!(sorted(alice.groups), vec!["analysts", "privacy"]);
    assert_eq!(alice.attributes.get("dn").map(String::as_str), Some("uid=alice,ou=people,dc=quiver,dc=test"));
    let bob = login(&auth, "bob", &slapd.var("LDAP_BOB_PASSWORD")).await.expect("bob");
    assert_eq!(bob.groups, vec!["engineers"]);
    let carol = login(&auth, "carol", &slapd.var("LDAP_CAROL_PASSWORD")).await.expect("carol");
    assert!(carol.groups.is_empty());
    // Several patterns: the first that binds wins.
    let multi = LdapConfig {
        user_bind_pattern: Some(
            "uid=${USER},ou=nowhere,dc=quiver,dc=test:uid=${USER},ou=people,dc=quiver,dc=test".into(),
        ),
        ..slapd.direct()
    };
    let bob = login(&self::auth(multi), "bob", &slapd.var("LDAP_BOB_PASSWORD")).await.expect("second pattern");
    assert_eq!(bob.attributes.get("dn").map(String::as_str), Some("uid=bob,ou=people,dc=quiver,dc=test"));
}

#[tokio::test]
async fn search_then_bind_over_start_tls() {
    let slapd = Slapd::start();
    let auth = auth(slapd.search());
    for _ in 0..2 {
        // Twice: the second login reuses the service connection.
        let alice = login(&auth, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect("alice");
        assert_eq!(alice.user, "alice");
        assert_eq!(sorted(alice.groups), vec!["analysts", "privacy"]);
        assert_eq!(alice.attributes.get("dn").map(String::as_str), Some("uid=alice,ou=people,dc=quiver,dc=test"));
    }
    let bob = login(&auth, "bob", &slapd.var("LDAP_BOB_PASSWORD")).await.expect("bob");
    assert_eq!(bob.groups, vec!["engineers"]);
    // Direct bind over StartTLS too.
    let direct = LdapConfig { url: slapd.var("LDAP_URL"), start_tls: true, ..slapd.direct() };
    login(&self::auth(direct), "carol", &slapd.var("LDAP_CAROL_PASSWORD")).await.expect("carol over StartTLS");
}

#[tokio::test]
async fn groups_from_member_of() {
    let slapd = Slapd::start();
    for base in [slapd.direct(), slapd.search()] {
        let config = LdapConfig {
            group_base_dn: None,
            group_search_filter: None,
            user_member_of_attribute: Some("memberOf".into()),
            ..base
        };
        let auth = auth(config);
        let alice = login(&auth, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect("alice");
        assert_eq!(sorted(alice.groups), vec!["analysts", "privacy"]);
        let carol = login(&auth, "carol", &slapd.var("LDAP_CAROL_PASSWORD")).await.expect("carol");
        assert!(carol.groups.is_empty());
    }
}

#[tokio::test]
async fn required_group_refuses_non_members() {
    let slapd = Slapd::start();
    for base in [slapd.direct(), slapd.search()] {
        let auth = auth(LdapConfig { required_groups: vec!["analysts".into()], ..base });
        login(&auth, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect("alice is an analyst");
        let detail = assert_denied(login(&auth, "bob", &slapd.var("LDAP_BOB_PASSWORD")).await, "bob");
        assert!(detail.contains("required groups"), "{detail}");
        assert_denied(login(&auth, "carol", &slapd.var("LDAP_CAROL_PASSWORD")).await, "carol");
    }
    // Trino's group_auth_pattern: a filter the user must match.
    for base in [slapd.direct(), slapd.search()] {
        let auth = auth(LdapConfig {
            user_base_dn: Some("ou=people,dc=quiver,dc=test".into()),
            group_auth_pattern: Some("(&(uid=${USER})(memberOf=cn=engineers,ou=groups,dc=quiver,dc=test))".into()),
            ..base
        });
        login(&auth, "bob", &slapd.var("LDAP_BOB_PASSWORD")).await.expect("bob is an engineer");
        let detail = assert_denied(login(&auth, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await, "alice");
        assert!(detail.contains("group_auth_pattern"), "{detail}");
    }
}

#[tokio::test]
async fn users_with_special_characters_log_in() {
    let slapd = Slapd::start();
    let (obrien, star) = (slapd.var("LDAP_OBRIEN_USER"), slapd.var("LDAP_STAR_USER"));
    assert_eq!((obrien.as_str(), star.as_str()), ("o'brien, jr+x", "star*(user)"));
    for (mode, config) in [("direct", slapd.direct()), ("search", slapd.search())] {
        let auth = auth(config);
        let id = login(&auth, &obrien, &slapd.var("LDAP_OBRIEN_PASSWORD")).await.expect(mode);
        assert_eq!(id.user, obrien);
        assert_eq!(id.groups, vec!["analysts"], "{mode}: group search by an escaped DN");
        let id = login(&auth, &star, &slapd.var("LDAP_STAR_PASSWORD")).await.expect(mode);
        assert_eq!(id.user, star);
        assert_eq!(id.groups, vec!["engineers"], "{mode}");
    }
}

#[tokio::test]
async fn injection_attempts_do_not_log_in() {
    let slapd = Slapd::start();
    let alice_pw = slapd.var("LDAP_ALICE_PASSWORD");
    let star_pw = slapd.var("LDAP_STAR_PASSWORD");
    for (mode, config) in [("direct", slapd.direct()), ("search", slapd.search())] {
        let auth = auth(config);
        // Unescaped, `alic*` and `a*e` would find alice alone and bind as her; `star*` would
        // find `star*(user)`; `*` and `alice)(uid=*` would match everyone.
        for (user, pw) in [
            ("alic*", &alice_pw),
            ("a*e", &alice_pw),
            ("*", &alice_pw),
            ("alice)(uid=*", &alice_pw),
            ("*)(|(uid=*", &alice_pw),
            ("star*", &star_pw),
            ("alice,ou=people,dc=quiver,dc=test", &alice_pw),
            ("alice\\", &alice_pw),
        ] {
            assert_denied(login(&auth, user, pw).await, &format!("{mode}: {user:?}"));
        }
    }
}

#[tokio::test]
async fn search_must_find_exactly_one_dn() {
    let slapd = Slapd::start();
    let ambiguous = LdapConfig { user_search_filter: "(|(uid=${USER})(uid=bob))".into(), ..slapd.search() };
    let detail =
        assert_denied(login(&auth(ambiguous), "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await, "two entries");
    assert!(detail.contains("more than one"), "{detail}");
    let detail = assert_denied(login(&auth(slapd.search()), "nobody", "pw").await, "no entry");
    assert!(detail.contains("no LDAP entry"), "{detail}");
}

#[tokio::test]
async fn empty_password_is_refused_before_binding() {
    let slapd = Slapd::start();
    for config in [slapd.direct(), slapd.search()] {
        let auth = auth(config);
        let detail = assert_denied(login(&auth, "carol", "").await, "empty password");
        assert!(detail.contains("empty password"), "{detail}");
        assert_eq!(auth.user_binds(), 0, "nothing may be sent for an empty password");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_give_the_same_error() {
    let slapd = Slapd::start();
    for config in [slapd.direct(), slapd.search()] {
        let auth = auth(config);
        let wrong = login(&auth, "alice", "not-her-password").await.expect_err("wrong password");
        let unknown = login(&auth, "mallory", "not-her-password").await.expect_err("unknown user");
        assert!(matches!(wrong, AuthError::Denied(_)) && matches!(unknown, AuthError::Denied(_)));
        assert_eq!(wrong.to_string(), "invalid credentials");
        assert_eq!(wrong.to_string(), unknown.to_string());
        assert_eq!(wrong.reason(), unknown.reason());
    }
}

#[tokio::test]
async fn cached_login_survives_a_stopped_server_but_wrong_passwords_do_not() {
    let slapd = Slapd::start();
    let alice_pw = slapd.var("LDAP_ALICE_PASSWORD");
    let auth = auth(LdapConfig { cache_ttl_secs: 60, ..slapd.direct() });
    let first = login(&auth, "alice", &alice_pw).await.expect("alice");
    assert_eq!(auth.user_binds(), 1);
    let second = login(&auth, "alice", &alice_pw).await.expect("cached");
    assert_eq!(auth.user_binds(), 1, "the second login is served from the cache");
    assert_eq!(first, second);
    // A failure is never cached, and a cached login does not vouch for another password.
    assert_denied(login(&auth, "bob", "wrong").await, "bob, wrong password");
    assert_denied(login(&auth, "bob", "wrong").await, "bob again");
    assert_eq!(auth.user_binds(), 3);

    slapd.stop();
    let cached = login(&auth, "alice", &alice_pw).await.expect("cached while the server is down");
    assert_eq!(cached.groups, first.groups);
    let err = login(&auth, "alice", "not-her-password").await.expect_err("not from cache");
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");

    // cache_ttl_secs = 0: every login binds.
    let slapd = Slapd::start();
    let uncached = self::auth(slapd.direct());
    login(&uncached, "alice", &alice_pw).await.expect("alice");
    login(&uncached, "alice", &alice_pw).await.expect("alice");
    assert_eq!(uncached.user_binds(), 2);
}

#[tokio::test]
async fn stopped_server_is_unavailable_naming_it() {
    let slapd = Slapd::start();
    let direct = auth(slapd.direct());
    let search = auth(slapd.search());
    // Open the service connection first, so the test covers a connection that dies.
    login(&search, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect("alice");
    slapd.stop();
    for (auth, key) in [(&direct, "LDAPS_URL"), (&search, "LDAP_URL")] {
        let err = login(auth, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect_err("server down");
        match &err {
            AuthError::Unavailable(msg) => assert!(msg.contains(&slapd.server(key)), "{msg}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn plain_ldap_is_refused_unless_allowed() {
    let slapd = Slapd::start();
    let plain = LdapConfig { url: slapd.var("LDAP_URL"), ..slapd.direct() };
    let err = LdapAuthenticator::new(plain.clone()).expect_err("clear text refused");
    assert!(err.contains("url") && err.contains("clear text"), "{err}");
    let insecure = auth(LdapConfig { allow_insecure: true, ca_file: None, ..plain });
    login(&insecure, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect("explicitly insecure works");
}

#[tokio::test]
async fn wrong_ca_or_service_password_is_unavailable_with_a_clear_error() {
    let slapd = Slapd::start();
    for config in [slapd.direct(), slapd.search()] {
        let auth = auth(LdapConfig { ca_file: Some(slapd.var("LDAP_OTHER_CA_FILE").into()), ..config });
        let err = login(&auth, "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect_err("untrusted server");
        match &err {
            AuthError::Unavailable(msg) => {
                eprintln!("wrong CA: {msg}");
                assert!(msg.contains("certificate") || msg.contains("UnknownIssuer"), "{msg}");
                assert!(msg.contains("127.0.0.1"), "{msg}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    let bad_service = LdapConfig { bind_password: Some(Secret::new("wrong")), ..slapd.search() };
    let err = login(&auth(bad_service), "alice", &slapd.var("LDAP_ALICE_PASSWORD")).await.expect_err("bad service");
    assert!(matches!(&err, AuthError::Unavailable(m) if m.contains("service account bind")), "{err:?}");
}
