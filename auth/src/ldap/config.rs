//! `[auth.ldap]`: where the directory is, how a login name becomes a DN, where groups come
//! from. Key names are Trino's `ldap.*` properties in snake case.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The placeholder for the login name in bind patterns and filters.
pub const USER_PLACEHOLDER: &str = "${USER}";
/// The placeholder for the user's DN in group filters.
pub const USER_DN_PLACEHOLDER: &str = "${USER_DN}";

/// A secret read from the config: deserializes from a plain string and never prints itself.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// LDAP authentication settings (`[auth.ldap]`).
///
/// Two ways to find the user's DN:
/// * direct bind: `user_bind_pattern`, e.g. `uid=${USER},ou=people,dc=example,dc=com`
///   (several patterns joined by `:` are tried in order);
/// * search then bind: `bind_dn` + `bind_password` (or `bind_password_file`) +
///   `user_base_dn` + `user_search_filter`; exactly one entry must match.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapConfig {
    /// The server: `ldaps://host:port`, or `ldap://host:port` with `start_tls = true` (or
    /// `allow_insecure = true`, which sends passwords in clear text).
    pub url: String,
    /// PEM file with the CA certificate(s) the server's certificate must chain to. Required
    /// whenever TLS is used (`ldaps://` or `start_tls`).
    pub ca_file: Option<PathBuf>,
    /// Upgrade an `ldap://` connection with the StartTLS operation before anything is sent.
    pub start_tls: bool,
    /// Allow a plain `ldap://` connection without StartTLS. For tests only: passwords travel
    /// in clear text.
    pub allow_insecure: bool,
    /// Direct bind: DN patterns containing `${USER}`, joined by `:`, tried in order. The login
    /// name is escaped as an RFC 4514 DN value before substitution.
    pub user_bind_pattern: Option<String>,
    /// Search then bind: the service account's DN.
    pub bind_dn: Option<String>,
    /// The service account's password.
    pub bind_password: Option<Secret>,
    /// A file holding the service account's password (trailing newline ignored); instead of
    /// `bind_password`.
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (search then bind, and `group_auth_pattern`).
    pub user_base_dn: Option<String>,
    /// The filter that finds a user's entry; `${USER}` is replaced by the login name escaped
    /// as an RFC 4515 filter value. Default `(uid=${USER})`.
    pub user_search_filter: String,
    /// Where groups are searched. Set together with `group_search_filter`.
    pub group_base_dn: Option<String>,
    /// The filter that finds the user's groups, with `${USER_DN}` and/or `${USER}`, e.g.
    /// `(&(objectClass=groupOfNames)(member=${USER_DN}))`. Searched as the service account
    /// in search-then-bind mode, as the user (who needs read access) in direct-bind mode.
    pub group_search_filter: Option<String>,
    /// The attribute of a group entry holding its name. Default `cn`.
    pub group_name_attribute: String,
    /// An attribute of the user's entry listing group DNs (usually `memberOf`); the value of
    /// each DN's first RDN becomes a group name.
    pub user_member_of_attribute: Option<String>,
    /// Trino's `group-auth-pattern`: a filter (with `${USER}` / `${USER_DN}`) searched under
    /// `user_base_dn`; the login is allowed only if it matches at least one entry.
    pub group_auth_pattern: Option<String>,
    /// The login is allowed only if the user is in at least one of these groups (as found by
    /// `group_search_filter` / `user_member_of_attribute`). Empty: no group required.
    pub required_groups: Vec<String>,
    /// Seconds to establish a connection, including the TLS handshake. Default 5.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the answer to one LDAP operation. Default 10.
    pub read_timeout_secs: u64,
    /// Seconds a successful login is remembered (keyed by user and a salted SHA-256 of the
    /// password); failures are never cached. 0 disables the cache. Default 60.
    pub cache_ttl_secs: u64,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: String::new(),
            ca_file: None,
            start_tls: false,
            allow_insecure: false,
            user_bind_pattern: None,
            bind_dn: None,
            bind_password: None,
            bind_password_file: None,
            user_base_dn: None,
            user_search_filter: "(uid=${USER})".into(),
            group_base_dn: None,
            group_search_filter: None,
            group_name_attribute: "cn".into(),
            user_member_of_attribute: None,
            group_auth_pattern: None,
            required_groups: Vec::new(),
            connect_timeout_secs: 5,
            read_timeout_secs: 10,
            cache_ttl_secs: 60,
        }
    }
}

impl LdapConfig {
    /// The bind patterns of `user_bind_pattern`, split on `:`.
    pub fn bind_patterns(&self) -> Vec<&str> {
        self.user_bind_pattern
            .as_deref()
            .map(|p| p.split(':').map(str::trim).filter(|p| !p.is_empty()).collect())
            .unwrap_or_default()
    }

    /// Whether the connection is encrypted (`ldaps://` or StartTLS).
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("ldaps://") || self.start_tls
    }

    /// Every problem serde cannot see, as (key, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, reason: String| problems.push((key.to_string(), reason));

        match url::Url::parse(&self.url) {
            _ if self.url.is_empty() => problem("url", "required: ldaps://host:port".into()),
            Err(e) => problem("url", format!("not a URL: {e}")),
            Ok(url) => {
                if url.host_str().is_none_or(str::is_empty) {
                    problem("url", "has no host".into());
                }
                match url.scheme() {
                    "ldaps" if self.start_tls => {
                        problem("start_tls", "StartTLS applies to ldap:// URLs; ldaps:// is already TLS".into())
                    }
                    "ldaps" => {}
                    "ldap" if self.start_tls || self.allow_insecure => {}
                    "ldap" => problem(
                        "url",
                        "ldap:// sends passwords in clear text: use ldaps://, set start_tls = true, \
                         or (for tests only) allow_insecure = true"
                            .into(),
                    ),
                    other => problem("url", format!("scheme `{other}` is not ldap or ldaps")),
                }
            }
        }
        match &self.ca_file {
            None if self.uses_tls() => {
                problem("ca_file", "required with TLS: the PEM CA that signed the server's certificate".into())
            }
            Some(path) if !path.is_file() => problem("ca_file", format!("{} is not a readable file", path.display())),
            _ => {}
        }

        let search_mode = self.bind_dn.is_some();
        match (self.user_bind_pattern.is_some(), search_mode) {
            (false, false) => problem(
                "user_bind_pattern",
                "set user_bind_pattern (direct bind) or bind_dn + user_base_dn (search then bind)".into(),
            ),
            (true, true) => problem(
                "user_bind_pattern",
                "set either user_bind_pattern (direct bind) or bind_dn (search then bind), not both".into(),
            ),
            _ => {}
        }
        if self.user_bind_pattern.is_some() {
            let patterns = self.bind_patterns();
            if patterns.is_empty() {
                problem("user_bind_pattern", "is empty".into());
            }
            for p in patterns {
                if !p.contains(USER_PLACEHOLDER) {
                    problem("user_bind_pattern", format!("pattern `{p}` does not contain ${{USER}}"));
                }
            }
        }
        if search_mode {
            if self.bind_dn.as_deref().is_some_and(|d| d.trim().is_empty()) {
                problem("bind_dn", "is empty".into());
            }
            match (&self.bind_password, &self.bind_password_file) {
                (None, None) => problem("bind_password", "required with bind_dn (or bind_password_file)".into()),
                (Some(_), Some(_)) => {
                    problem("bind_password", "set bind_password or bind_password_file, not both".into())
                }
                (Some(p), None) if p.expose().is_empty() => problem("bind_password", "is empty".into()),
                (None, Some(path)) if !path.is_file() => {
                    problem("bind_password_file", format!("{} is not a readable file", path.display()))
                }
                _ => {}
            }
            if self.user_base_dn.is_none() {
                problem("user_base_dn", "required with bind_dn: where users are searched".into());
            }
            check_filter(&mut problem, "user_search_filter", &self.user_search_filter, true);
        } else if self.bind_password.is_some() || self.bind_password_file.is_some() {
            problem("bind_dn", "bind_password is set but bind_dn is not".into());
        }

        match (&self.group_base_dn, &self.group_search_filter) {
            (Some(_), None) => problem("group_search_filter", "required with group_base_dn".into()),
            (None, Some(_)) => problem("group_base_dn", "required with group_search_filter".into()),
            (Some(_), Some(filter)) => {
                check_filter(&mut problem, "group_search_filter", filter, false);
                if !filter.contains(USER_PLACEHOLDER) && !filter.contains(USER_DN_PLACEHOLDER) {
                    problem("group_search_filter", "contains neither ${USER_DN} nor ${USER}".into());
                }
            }
            (None, None) => {}
        }
        if self.group_name_attribute.trim().is_empty() {
            problem("group_name_attribute", "is empty".into());
        }
        if self.user_member_of_attribute.as_deref().is_some_and(|a| a.trim().is_empty()) {
            problem("user_member_of_attribute", "is empty".into());
        }
        if let Some(pattern) = &self.group_auth_pattern {
            check_filter(&mut problem, "group_auth_pattern", pattern, false);
            if self.user_base_dn.is_none() {
                problem("user_base_dn", "required with group_auth_pattern: where the pattern is searched".into());
            }
        }
        if self.required_groups.iter().any(|g| g.trim().is_empty()) {
            problem("required_groups", "contains an empty group name".into());
        }
        if !self.required_groups.is_empty()
            && self.group_search_filter.is_none()
            && self.user_member_of_attribute.is_none()
        {
            problem(
                "required_groups",
                "needs a source of groups: group_base_dn + group_search_filter or user_member_of_attribute".into(),
            );
        }
        if self.connect_timeout_secs == 0 {
            problem("connect_timeout_secs", "must be at least 1".into());
        }
        if self.read_timeout_secs == 0 {
            problem("read_timeout_secs", "must be at least 1".into());
        }
        problems
    }
}

/// A filter must be parenthesized, balanced, and (for user filters) mention `${USER}`.
fn check_filter(problem: &mut impl FnMut(&str, String), key: &str, filter: &str, needs_user: bool) {
    let mut depth = 0i32;
    let balanced = filter.chars().all(|c| {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        depth >= 0
    }) && depth == 0;
    if !(filter.starts_with('(') && filter.ends_with(')') && balanced) {
        problem(key, format!("`{filter}` is not a parenthesized LDAP filter"));
    }
    if needs_user && !filter.contains(USER_PLACEHOLDER) {
        problem(key, format!("`{filter}` does not contain ${{USER}}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(config: &LdapConfig) -> Vec<String> {
        config.validate().into_iter().map(|(k, _)| k).collect()
    }

    fn direct(url: &str) -> LdapConfig {
        LdapConfig {
            url: url.into(),
            ca_file: Some(PathBuf::from("Cargo.toml")),
            user_bind_pattern: Some("uid=${USER},ou=people,dc=x".into()),
            ..LdapConfig::default()
        }
    }

    #[test]
    fn parses_trino_style_keys_and_defaults() {
        let config: LdapConfig = toml::from_str(
            r#"
            url = "ldaps://ldap.example.com:636"
            ca_file = "Cargo.toml"
            bind_dn = "cn=svc,dc=example,dc=com"
            bind_password = "pw"
            user_base_dn = "ou=people,dc=example,dc=com"
            group_base_dn = "ou=groups,dc=example,dc=com"
            group_search_filter = "(&(objectClass=groupOfNames)(member=${USER_DN}))"
            required_groups = ["analysts"]
            "#,
        )
        .expect("parse");
        assert_eq!(config.user_search_filter, "(uid=${USER})");
        assert_eq!(config.group_name_attribute, "cn");
        assert_eq!(config.cache_ttl_secs, 60);
        assert_eq!(config.validate(), vec![]);
        assert!(!format!("{config:?}").contains("\"pw\""), "the password must not be printed");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<LdapConfig>("url = \"ldaps://h\"\nuser_bind_patern = \"x\"").expect_err("typo");
        assert!(err.to_string().contains("user_bind_patern"), "{err}");
    }

    #[test]
    fn plain_ldap_is_refused_unless_start_tls_or_explicitly_insecure() {
        assert_eq!(keys(&direct("ldap://127.0.0.1:389")), vec!["url"]);
        assert_eq!(keys(&LdapConfig { start_tls: true, ..direct("ldap://127.0.0.1:389") }), Vec::<String>::new());
        let insecure = LdapConfig { allow_insecure: true, ca_file: None, ..direct("ldap://127.0.0.1:389") };
        assert_eq!(keys(&insecure), Vec::<String>::new());
        assert_eq!(keys(&LdapConfig { start_tls: true, ..direct("ldaps://h:636") }), vec!["start_tls"]);
        assert_eq!(keys(&direct("http://h")), vec!["url"]);
        assert_eq!(keys(&direct("")), vec!["url"]);
    }

    #[test]
    fn tls_needs_a_readable_ca_file() {
        assert_eq!(keys(&LdapConfig { ca_file: None, ..direct("ldaps://h:636") }), vec!["ca_file"]);
        let missing = LdapConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..direct("ldaps://h:636") };
        assert_eq!(keys(&missing), vec!["ca_file"]);
    }

    #[test]
    fn needs_exactly_one_way_to_find_the_dn() {
        let none = LdapConfig { user_bind_pattern: None, ..direct("ldaps://h") };
        assert_eq!(keys(&none), vec!["user_bind_pattern"]);
        let both = LdapConfig {
            bind_dn: Some("cn=svc".into()),
            bind_password: Some(Secret::new("pw")),
            user_base_dn: Some("dc=x".into()),
            ..direct("ldaps://h")
        };
        assert_eq!(keys(&both), vec!["user_bind_pattern"]);
        let no_user =
            LdapConfig { user_bind_pattern: Some("uid=alice,dc=x:uid=${USER},dc=y".into()), ..direct("ldaps://h") };
        assert_eq!(keys(&no_user), vec!["user_bind_pattern"]);
        assert_eq!(no_user.bind_patterns(), vec!["uid=alice,dc=x", "uid=${USER},dc=y"]);
    }

    #[test]
    fn search_mode_needs_password_base_and_a_user_filter() {
        let search = LdapConfig {
            user_bind_pattern: None,
            bind_dn: Some("cn=svc".into()),
            user_search_filter: "(uid=alice".into(),
            ..direct("ldaps://h")
        };
        let mut got = keys(&search);
        got.sort();
        assert_eq!(got, vec!["bind_password", "user_base_dn", "user_search_filter", "user_search_filter"]);
    }

    #[test]
    fn group_settings_come_in_pairs() {
        let groups = LdapConfig {
            group_base_dn: Some("ou=groups".into()),
            required_groups: vec!["analysts".into()],
            group_auth_pattern: Some("(memberOf=cn=x)".into()),
            connect_timeout_secs: 0,
            ..direct("ldaps://h")
        };
        let mut got = keys(&groups);
        got.sort();
        // required_groups has no source either: group_base_dn alone does not search.
        assert_eq!(got, vec!["connect_timeout_secs", "group_search_filter", "required_groups", "user_base_dn"]);
        let no_source = LdapConfig { required_groups: vec!["analysts".into()], ..direct("ldaps://h") };
        assert_eq!(keys(&no_source), vec!["required_groups"]);
    }
}
