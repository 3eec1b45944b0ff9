//! LDAP: Basic credentials checked by binding to a directory server, as Trino's LDAP password
//! authenticator does.
//!
//! The user's DN comes from a bind pattern (`uid=${USER},ou=people,...`, direct bind) or from
//! a search with a service account (search then bind, where exactly one entry must match).
//! Groups come from a group search and/or the user's `memberOf`. Logins can be limited to
//! members of given groups (`required_groups`) or to users matching Trino's
//! `group_auth_pattern`.
//!
//! Connections: the service account keeps one authenticated connection that all logins share
//! (ldap3 multiplexes operations on it); it is re-opened when the server closes it. Each user
//! bind uses a fresh connection, closed after the login, so a user's bind never changes the
//! identity of a connection somebody else is using.
//!
//! Security: an empty password is refused before anything is sent (an LDAP bind with a DN and
//! no password is an "unauthenticated bind" that succeeds on many servers); login names are
//! escaped per RFC 4514 in DNs and per RFC 4515 in filters; TLS verifies the server against
//! the configured CA only; unknown users and wrong passwords fail with the same public error.

mod cache;
mod config;
mod conn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{LdapError, Scope, SearchEntry, SearchOptions};

pub use config::{LdapConfig, Secret};

use crate::{AuthError, Authenticator, Credentials, Identity};
use cache::LoginCache;
use conn::{Connector, Ldap};

/// Longest login name accepted.
const MAX_USER_BYTES: usize = 256;
/// Longest password accepted.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Most groups read for one user.
const MAX_GROUPS: i32 = 1000;
/// The attribute list that asks for no attributes (RFC 4511 4.5.1.8).
const NO_ATTRIBUTES: &str = "1.1";

/// Authenticates Basic credentials against an LDAP directory.
pub struct LdapAuthenticator {
    config: LdapConfig,
    connector: Connector,
    bind_password: Option<Secret>,
    service: tokio::sync::Mutex<Option<Ldap>>,
    cache: LoginCache,
    user_binds: AtomicU64,
}

impl std::fmt::Debug for LdapAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapAuthenticator").field("url", &self.config.url).finish_non_exhaustive()
    }
}

/// The user's entry as far as the login needs it.
struct UserEntry {
    dn: String,
    attrs: HashMap<String, Vec<String>>,
}

impl LdapAuthenticator {
    /// Checks `config`, reads the CA and password files and prepares TLS. Nothing is sent to
    /// the server until the first login.
    pub fn new(config: LdapConfig) -> Result<Self, String> {
        let problems = config.validate();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, r)| format!("{k}: {r}")).collect();
            return Err(format!("invalid LDAP settings: {}", list.join("; ")));
        }
        let bind_password = match (&config.bind_password, &config.bind_password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("bind_password_file {}: {e}", path.display()))?;
                let password = text.trim_end_matches(['\r', '\n']);
                if password.is_empty() {
                    return Err(format!("bind_password_file {}: is empty", path.display()));
                }
                Some(Secret::new(password))
            }
            (None, None) => None,
        };
        let connector = Connector::new(
            &config.url,
            if config.uses_tls() { config.ca_file.as_deref() } else { None },
            config.start_tls,
            Duration::from_secs(config.connect_timeout_secs),
            Duration::from_secs(config.read_timeout_secs),
        )?;
        Ok(LdapAuthenticator {
            cache: LoginCache::new(Duration::from_secs(config.cache_ttl_secs)),
            config,
            connector,
            bind_password,
            service: tokio::sync::Mutex::new(None),
            user_binds: AtomicU64::new(0),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    /// How many binds with users' credentials were sent since start (cache hits and refusals
    /// before binding send none). For metrics and tests.
    pub fn user_binds(&self) -> u64 {
        self.user_binds.load(Ordering::Relaxed)
    }

    /// Binds `conn` as `dn` with a user's password.
    async fn user_bind(&self, conn: &mut Ldap, dn: &str, password: &str) -> Result<(), AuthError> {
        self.user_binds.fetch_add(1, Ordering::Relaxed);
        conn.op()
            .simple_bind(dn, password)
            .await
            .and_then(|r| r.success())
            .map(|_| ())
            .map_err(|e| self.connector.bind_error(dn, e))
    }

    /// The shared service-account connection, opened and bound on first use.
    async fn service(&self) -> Result<Ldap, AuthError> {
        let mut slot = self.service.lock().await;
        if let Some(conn) = slot.as_mut()
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        *slot = None;
        let dn = self.config.bind_dn.as_deref().unwrap_or_default();
        let password = self.bind_password.as_ref().map(Secret::expose).unwrap_or_default();
        let mut conn = self.connector.connect().await?;
        if let Err(e) = conn.op().simple_bind(dn, password).await.and_then(|r| r.success()) {
            conn.close().await;
            return Err(self.connector.unavailable(&format!("service account bind as `{dn}`"), &e));
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A search over the service connection; a connection that turns out to be dead is
    /// replaced once.
    async fn service_search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        limit: i32,
    ) -> Result<Vec<SearchEntry>, AuthError> {
        let mut attempt = 0;
        loop {
            let mut conn = self.service().await?;
            match search(&mut conn, base, scope, filter, attrs, limit).await {
                Ok(entries) => return Ok(entries),
                Err(e @ LdapError::LdapResult { .. }) => return Err(self.search_error(base, filter, &e)),
                Err(e) if attempt > 0 => return Err(self.search_error(base, filter, &e)),
                Err(e) => {
                    tracing::debug!(server = %self.connector.url(), error = %e, "LDAP service connection lost; reconnecting");
                    if let Some(old) = self.service.lock().await.take() {
                        old.close().await;
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn search_error(&self, base: &str, filter: &str, e: &LdapError) -> AuthError {
        self.connector.unavailable(&format!("search for `{filter}` under `{base}`"), e)
    }

    /// A search over the user's own connection (direct-bind mode) or the service connection.
    async fn search_as(
        &self,
        user_conn: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        limit: i32,
    ) -> Result<Vec<SearchEntry>, AuthError> {
        if self.config.bind_dn.is_some() {
            self.service_search(base, scope, filter, attrs, limit).await
        } else {
            search(user_conn, base, scope, filter, attrs, limit).await.map_err(|e| self.search_error(base, filter, &e))
        }
    }

    /// Search then bind: finds the one entry matching the user filter.
    async fn find_user(&self, user: &str) -> Result<UserEntry, AuthError> {
        let base = self.config.user_base_dn.as_deref().unwrap_or_default();
        let filter = conn::filter(&self.config.user_search_filter, user, "");
        let attrs = self.user_attrs();
        // Two are enough to tell "exactly one" from "more than one".
        let mut entries = self.service_search(base, Scope::Subtree, &filter, &attrs, 2).await?;
        match entries.len() {
            1 => {
                let entry = entries.remove(0);
                Ok(UserEntry { dn: entry.dn, attrs: entry.attrs })
            }
            0 => Err(AuthError::Denied(format!("no LDAP entry matches `{filter}` under `{base}`"))),
            _ => Err(AuthError::Denied(format!(
                "more than one LDAP entry matches `{filter}` under `{base}`: refusing an ambiguous login"
            ))),
        }
    }

    fn user_attrs(&self) -> Vec<String> {
        vec![self.config.user_member_of_attribute.clone().unwrap_or_else(|| NO_ATTRIBUTES.into())]
    }

    /// Direct bind: tries each pattern in order on `conn`; returns the DN that worked.
    async fn bind_with_patterns(&self, conn: &mut Ldap, user: &str, password: &str) -> Result<String, AuthError> {
        let mut refused = Vec::new();
        for pattern in self.config.bind_patterns() {
            let dn = conn::bind_dn(pattern, user);
            match self.user_bind(conn, &dn, password).await {
                Ok(()) => return Ok(dn),
                Err(AuthError::Denied(detail)) => refused.push(detail),
                Err(other) => return Err(other),
            }
        }
        Err(AuthError::Denied(refused.join("; ")))
    }

    /// The whole login against the directory (no cache).
    async fn login(&self, user: &str, password: &str) -> Result<Identity, AuthError> {
        let (entry, mut conn) = if self.config.bind_dn.is_some() {
            let entry = self.find_user(user).await?;
            let mut conn = self.connector.connect().await?;
            if let Err(e) = self.user_bind(&mut conn, &entry.dn, password).await {
                conn.close().await;
                return Err(e);
            }
            (entry, conn)
        } else {
            let mut conn = self.connector.connect().await?;
            let dn = match self.bind_with_patterns(&mut conn, user, password).await {
                Ok(dn) => dn,
                Err(e) => {
                    conn.close().await;
                    return Err(e);
                }
            };
            (UserEntry { dn, attrs: HashMap::new() }, conn)
        };
        let result = self.authorize(&mut conn, user, entry).await;
        conn.close().await;
        result
    }

    /// After a successful bind: groups, group rules, the identity.
    async fn authorize(&self, conn: &mut Ldap, user: &str, mut entry: UserEntry) -> Result<Identity, AuthError> {
        let mut groups: Vec<String> = Vec::new();
        let mut add = |name: String| {
            if !groups.contains(&name) {
                groups.push(name);
            }
        };
        if let (Some(base), Some(filter)) = (&self.config.group_base_dn, &self.config.group_search_filter) {
            let filter = conn::filter(filter, user, &entry.dn);
            let attr = &self.config.group_name_attribute;
            let found =
                self.search_as(conn, base, Scope::Subtree, &filter, std::slice::from_ref(attr), MAX_GROUPS).await?;
            for group in found {
                attribute(&group.attrs, attr).iter().cloned().for_each(&mut add);
            }
        }
        if let Some(member_of) = &self.config.user_member_of_attribute {
            if self.config.bind_dn.is_none() {
                // Direct bind: read the user's own entry.
                let attrs = self.user_attrs();
                let mut found = self.search_as(conn, &entry.dn, Scope::Base, "(objectClass=*)", &attrs, 1).await?;
                if let Some(own) = found.pop() {
                    entry.attrs = own.attrs;
                }
            }
            attribute(&entry.attrs, member_of).iter().filter_map(|dn| conn::first_rdn_value(dn)).for_each(&mut add);
        }
        if let Some(pattern) = &self.config.group_auth_pattern {
            let base = self.config.user_base_dn.as_deref().unwrap_or_default();
            let filter = conn::filter(pattern, user, &entry.dn);
            let no_attrs = [NO_ATTRIBUTES.to_string()];
            if self.search_as(conn, base, Scope::Subtree, &filter, &no_attrs, 1).await?.is_empty() {
                return Err(AuthError::Denied(format!(
                    "`{}` does not match group_auth_pattern `{filter}` under `{base}`",
                    entry.dn
                )));
            }
        }
        if !self.config.required_groups.is_empty() && !self.config.required_groups.iter().any(|g| groups.contains(g)) {
            return Err(AuthError::Denied(format!(
                "`{user}` is in none of the required groups ({}); groups found: [{}]",
                self.config.required_groups.join(", "),
                groups.join(", ")
            )));
        }
        let mut identity = Identity::new(user, "ldap").with_groups(groups);
        identity.attributes.insert("dn".into(), entry.dn);
        Ok(identity)
    }
}

/// The values of `name` (attribute names are case-insensitive).
fn attribute<'a>(attrs: &'a HashMap<String, Vec<String>>, name: &str) -> &'a [String] {
    attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or_default()
}

/// A bounded search; `sizeLimitExceeded` returns the entries found so far.
async fn search(
    conn: &mut Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[String],
    limit: i32,
) -> Result<Vec<SearchEntry>, LdapError> {
    let ldap3::SearchResult(entries, result) = conn
        .op()
        .with_search_options(SearchOptions::new().sizelimit(limit))
        .search(base, scope, filter, attrs.to_vec())
        .await?;
    // 0 success, 4 sizeLimitExceeded.
    if result.rc != 0 && result.rc != 4 {
        return Err(LdapError::from(result));
    }
    Ok(entries.into_iter().map(SearchEntry::construct).collect())
}

#[async_trait]
impl Authenticator for LdapAuthenticator {
    fn name(&self) -> &'static str {
        "ldap"
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError> {
        let Credentials::Basic { user, password } = credentials else {
            return Ok(None);
        };
        // Refused before anything reaches the server.
        if password.is_empty() {
            return Err(AuthError::Denied("empty password (would be an unauthenticated LDAP bind)".into()));
        }
        if user.is_empty() || user.len() > MAX_USER_BYTES || password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::Denied("user name or password empty or too long".into()));
        }
        if user.chars().any(char::is_control) {
            return Err(AuthError::Denied("user name contains control characters".into()));
        }
        if let Some(identity) = self.cache.get(user, password) {
            return Ok(Some(identity));
        }
        let identity = self.login(user, password).await?;
        tracing::debug!(user = %user, dn = ?identity.attributes.get("dn"), groups = ?identity.groups, "LDAP login");
        self.cache.put(user, password, &identity);
        Ok(Some(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic { user: user.into(), password: password.into() }
    }

    /// A config pointing at a port nothing listens on.
    fn unreachable() -> LdapConfig {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        LdapConfig {
            url: format!("ldap://127.0.0.1:{port}"),
            allow_insecure: true,
            user_bind_pattern: Some("uid=${USER},ou=people,dc=x".into()),
            connect_timeout_secs: 2,
            ..LdapConfig::default()
        }
    }

    #[tokio::test]
    async fn empty_password_is_refused_before_any_bind() {
        let auth = LdapAuthenticator::new(unreachable()).expect("new");
        let err = auth.authenticate(&basic("alice", "")).await.expect_err("refused");
        // Denied, not Unavailable: the server was never contacted.
        assert!(matches!(&err, AuthError::Denied(d) if d.contains("empty password")), "{err:?}");
        assert_eq!(err.to_string(), "invalid credentials");
        assert_eq!(auth.user_binds(), 0);
    }

    #[tokio::test]
    async fn bad_user_names_are_refused_before_any_bind() {
        let auth = LdapAuthenticator::new(unreachable()).expect("new");
        for user in ["", "nul\0byte", "line\nbreak", &"x".repeat(MAX_USER_BYTES + 1)] {
            let err = auth.authenticate(&basic(user, "pw")).await.expect_err("refused");
            assert!(matches!(err, AuthError::Denied(_)), "{user:?}: {err:?}");
        }
        assert_eq!(auth.user_binds(), 0);
    }

    #[tokio::test]
    async fn other_credentials_are_not_ours() {
        let auth = LdapAuthenticator::new(unreachable()).expect("new");
        assert_eq!(auth.authenticate(&Credentials::None).await, Ok(None));
        assert_eq!(auth.authenticate(&Credentials::Bearer("t".into())).await, Ok(None));
        assert_eq!(auth.name(), "ldap");
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable_naming_it() {
        let config = unreachable();
        let url = config.url.clone();
        let auth = LdapAuthenticator::new(config).expect("new");
        let err = auth.authenticate(&basic("alice", "pw")).await.expect_err("down");
        assert!(matches!(&err, AuthError::Unavailable(m) if m.contains(&url)), "{err:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out_as_unavailable() {
        // Accepts the TCP connection and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let config = LdapConfig { url: format!("ldap://127.0.0.1:{port}"), read_timeout_secs: 1, ..unreachable() };
        let auth = LdapAuthenticator::new(config).expect("new");
        let started = std::time::Instant::now();
        let err = auth.authenticate(&basic("alice", "pw")).await.expect_err("timeout");
        assert!(matches!(&err, AuthError::Unavailable(m) if m.contains("timeout")), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        drop(listener);
    }

    #[test]
    fn new_reports_every_problem() {
        let err = LdapAuthenticator::new(LdapConfig::default()).expect_err("invalid");
        assert!(err.contains("url: required") && err.contains("user_bind_pattern"), "{err}");
    }

    #[test]
    fn bind_password_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        let config = LdapConfig {
            user_bind_pattern: None,
            bind_dn: Some("cn=svc,dc=x".into()),
            bind_password_file: Some(path.clone()),
            user_base_dn: Some("dc=x".into()),
            ..unreachable()
        };
        let auth = LdapAuthenticator::new(config.clone()).expect("new");
        assert_eq!(auth.bind_password.as_ref().map(Secret::expose), Some("s3cret"));
        std::fs::write(&path, "\n").expect("write");
        assert!(LdapAuthenticator::new(config).expect_err("empty").contains("is empty"));
    }
}
