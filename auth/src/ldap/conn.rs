//! Connections to the directory: TLS against the configured CA, timeouts, and turning ldap3
//! errors into [`AuthError`]s that name the server. Also the escaping of login names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError};

use super::config::{USER_DN_PLACEHOLDER, USER_PLACEHOLDER};
use crate::AuthError;

/// Result codes that mean "these credentials are refused" rather than "the server is broken":
/// invalidCredentials (49), inappropriateAuthentication (48), insufficientAccessRights (50),
/// unwillingToPerform (53, e.g. an unauthenticated bind), noSuchObject (32),
/// invalidDNSyntax (34).
const REFUSED_BIND_CODES: [u32; 6] = [49, 48, 50, 53, 32, 34];

/// How to reach the server.
#[derive(Clone)]
pub(super) struct Connector {
    url: String,
    settings: LdapConnSettings,
    settings_timeout: Duration,
    read_timeout: Duration,
}

impl Connector {
    /// A connector for `url`; with TLS (`ldaps://` or `start_tls`) the server must present a
    /// certificate chaining to one in `ca_file`.
    pub(super) fn new(
        url: &str,
        ca_file: Option<&Path>,
        start_tls: bool,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, String> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(connect_timeout).set_starttls(start_tls);
        if let Some(ca_file) = ca_file {
            settings = settings.set_config(Arc::new(tls_config(ca_file)?));
        }
        Ok(Connector { url: url.to_string(), settings, settings_timeout: connect_timeout, read_timeout })
    }

    /// A TCP connection to the URL's host and port (389 for `ldap://`, 636 for `ldaps://`),
    /// with TCP_NODELAY, within the connect timeout.
    async fn tcp(&self) -> Result<std::net::TcpStream, AuthError> {
        let url = url::Url::parse(&self.url).map_err(|e| self.unavailable("bad URL", &e))?;
        let port = url.port().unwrap_or(if url.scheme() == "ldaps" { 636 } else { 389 });
        let host = url.host_str().filter(|h| !h.is_empty()).unwrap_or("localhost");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let timeout = self.settings_timeout;
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| self.unavailable("cannot connect", &format!("timed out after {timeout:?}")))?
            .map_err(|e| self.unavailable("cannot connect", &e))?;
        let _ = stream.set_nodelay(true);
        stream.into_std().map_err(|e| self.unavailable("cannot connect", &e))
    }

    /// The server's URL, for messages.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// A new connection, driven on the runtime; operations on it time out after the read
    /// timeout.
    pub(super) async fn connect(&self) -> Result<Ldap, AuthError> {
        // The TCP connection is opened here so TCP_NODELAY can be set: without it each small
        // LDAP request after the TLS handshake waits for a delayed ACK (~40 ms per login).
        let stream = self.tcp().await?;
        let settings = self.settings.clone().set_std_stream(ldap3::StdStream::Tcp(stream));
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| self.unavailable("cannot connect", &e))?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(server = %url, error = %e, "LDAP connection ended");
            }
        });
        Ok(Ldap { inner: ldap, read_timeout: self.read_timeout })
    }

    /// `Unavailable`, naming the server and what was being done.
    pub(super) fn unavailable(&self, what: &str, e: &dyn std::fmt::Display) -> AuthError {
        AuthError::Unavailable(format!("LDAP server {}: {what}: {e}", self.url))
    }

    /// Classifies the error of a bind with a user's credentials: a refusal is `Denied`,
    /// anything else means the server could not answer.
    pub(super) fn bind_error(&self, dn: &str, e: LdapError) -> AuthError {
        match e {
            LdapError::LdapResult { result } if REFUSED_BIND_CODES.contains(&result.rc) => {
                AuthError::Denied(format!("LDAP bind as `{dn}` refused: {result}"))
            }
            other => self.unavailable(&format!("bind as `{dn}`"), &other),
        }
    }
}

/// A connection with the read timeout applied to every operation.
#[derive(Clone)]
pub(super) struct Ldap {
    inner: ldap3::Ldap,
    read_timeout: Duration,
}

impl Ldap {
    /// The handle for the next operation.
    pub(super) fn op(&mut self) -> &mut ldap3::Ldap {
        self.inner.with_timeout(self.read_timeout)
    }

    /// Whether the connection is gone.
    pub(super) fn is_closed(&mut self) -> bool {
        self.inner.is_closed()
    }

    /// Closes the connection politely (errors ignored: it is being thrown away).
    pub(super) async fn close(mut self) {
        let _ = self.op().unbind().await;
    }
}

/// A rustls client config (ring provider) trusting only the certificates in `ca_file`.
fn tls_config(ca_file: &Path) -> Result<rustls::ClientConfig, String> {
    crate::tls::client_config(Some(ca_file))
}

/// `template` with `${USER}` replaced by `user` escaped as an RFC 4514 DN attribute value.
pub(super) fn bind_dn(template: &str, user: &str) -> String {
    template.replace(USER_PLACEHOLDER, &ldap3::dn_escape(user))
}

/// `filter` with `${USER}` and `${USER_DN}` replaced by values escaped per RFC 4515, so a login
/// name like `*` or `admin)(uid=*` matches only itself.
pub(super) fn filter(filter: &str, user: &str, user_dn: &str) -> String {
    filter
        .replace(USER_DN_PLACEHOLDER, &ldap3::ldap_escape(user_dn))
        .replace(USER_PLACEHOLDER, &ldap3::ldap_escape(user))
}

/// The value of the first RDN of `dn` (`cn=analysts,ou=groups,...` -> `analysts`), with DN
/// escapes (`\,`, `\2c`) undone. `None` if the DN is malformed.
pub(super) fn first_rdn_value(dn: &str) -> Option<String> {
    let (_, rest) = dn.split_once('=')?;
    let mut bytes = Vec::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            ',' | '+' => break,
            '\\' => {
                let next = chars.next()?;
                if next.is_ascii_hexdigit() {
                    let low = chars.next()?;
                    let byte = u8::from_str_radix(&format!("{next}{low}"), 16).ok()?;
                    bytes.push(byte);
                } else {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                }
            }
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    let value = String::from_utf8(bytes).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped_per_rfc_4514() {
        let t = "uid=${USER},ou=people,dc=x";
        assert_eq!(bind_dn(t, "alice"), "uid=alice,ou=people,dc=x");
        assert_eq!(bind_dn(t, "o'brien, jr+x"), "uid=o'brien\\2c jr\\2bx,ou=people,dc=x");
        assert_eq!(bind_dn(t, "a=b;c<d>\"e\\"), "uid=a\\3db\\3bc\\3cd\\3e\\22e\\5c,ou=people,dc=x");
        assert_eq!(bind_dn(t, " #lead trail "), "uid=\\20#lead trail\\20,ou=people,dc=x");
        assert_eq!(bind_dn(t, "#x"), "uid=\\23x,ou=people,dc=x");
        // An attempt to address another subtree stays inside one RDN value.
        assert_eq!(bind_dn(t, "admin,dc=x"), "uid=admin\\2cdc\\3dx,ou=people,dc=x");
    }

    #[test]
    fn filter_values_are_escaped_per_rfc_4515() {
        assert_eq!(filter("(uid=${USER})", "*", ""), "(uid=\\2a)");
        assert_eq!(filter("(uid=${USER})", "admin)(uid=*", ""), "(uid=admin\\29\\28uid=\\2a)");
        assert_eq!(filter("(uid=${USER})", "a\\b\0c", ""), "(uid=a\\5cb\\00c)");
        assert_eq!(
            filter("(&(member=${USER_DN})(x=${USER}))", "star*(user)", "uid=star*(user),dc=x"),
            "(&(member=uid=star\\2a\\28user\\29,dc=x)(x=star\\2a\\28user\\29))"
        );
        // DN escapes inside a filter value: the backslash itself is escaped again.
        assert_eq!(filter("(member=${USER_DN})", "", "uid=o\\2cb,dc=x"), "(member=uid=o\\5c2cb,dc=x)");
    }

    #[test]
    fn first_rdn_value_undoes_dn_escapes() {
        assert_eq!(first_rdn_value("cn=analysts,ou=groups,dc=x").as_deref(), Some("analysts"));
        assert_eq!(first_rdn_value("CN=Data\\, Science,OU=g").as_deref(), Some("Data, Science"));
        assert_eq!(first_rdn_value("cn=a\\2Bb+uid=c,dc=x").as_deref(), Some("a+b"));
        assert_eq!(first_rdn_value("cn=caf\\c3\\a9").as_deref(), Some("café"));
        assert_eq!(first_rdn_value("no-equals"), None);
        assert_eq!(first_rdn_value("cn=,dc=x"), None);
        assert_eq!(first_rdn_value("cn=bad\\"), None);
    }

    #[test]
    fn tls_config_needs_a_pem_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = tls_config(&path).expect_err("no certificate");
        assert!(err.contains("no PEM certificate"), "{err}");
        assert!(tls_config(&dir.path().join("missing.pem")).is_err());
    }
}
