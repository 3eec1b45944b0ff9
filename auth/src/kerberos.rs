//! Kerberos (SPNEGO): `authorization: Negotiate <base64>` checked against the service's keytab
//! with the MIT GSSAPI library, as Trino's `KERBEROS` authenticator does.
//!
//! [`KerberosConfig`] is always compiled, so a gateway built without the `kerberos` feature can
//! still parse `[auth.kerberos]` and say why it cannot start it; [`KerberosAuthenticator`] needs
//! the feature (and the MIT library at run time).
//!
//! The keytab and krb5.conf are chosen through the process environment (`KRB5_KTNAME`,
//! `KRB5_CONFIG`): the Rust binding does not expose `gss_acquire_cred_from`, and changing the
//! environment of a running multi-threaded process is unsound (and needs `unsafe`, which this
//! crate forbids). [`KerberosConfig::process_env`] lists what the process needs, and
//! [`KerberosConfig::reexec_with_process_env`] lets the binary re-execute itself with it before
//! any thread starts. One keytab per process, as in Trino.
//!
//! Replayed tokens are refused by MIT's replay cache, which is on by default and lives in
//! `KRB5RCACHEDIR` (default `/var/tmp`, file `krb5_<uid>.rcache2`); replicas behind a load
//! balancer each keep their own.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default largest accepted token: real tickets are a few KiB, PAC-heavy ones up to ~48 KiB.
const DEFAULT_MAX_TOKEN_BYTES: usize = 64 * 1024;

/// `[auth.kerberos]`: the service identity the gateway accepts tickets for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KerberosConfig {
    /// The service part of the principal (Trino `service-name`). Default `HTTP`, the name
    /// browsers, curl and most drivers ask tickets for.
    pub service_name: String,
    /// The host part of the principal (`HTTP/<hostname>@REALM`). When unset, a ticket for any
    /// `<service_name>/<host>` principal in the keytab is accepted (useful behind a load balancer
    /// with several names).
    pub hostname: Option<String>,
    /// The keytab holding the service key (Trino `keytab`). Default: the system's
    /// (`KRB5_KTNAME` or `/etc/krb5.keytab`). Must be readable by the gateway.
    pub keytab: Option<PathBuf>,
    /// A krb5.conf to use instead of the system's (Trino `config`, i.e. `java.security.krb5.conf`).
    pub krb5_config: Option<PathBuf>,
    /// Largest `Negotiate` token accepted, in bytes (after base64 decoding). Default 64 KiB.
    pub max_token_bytes: usize,
}

impl Default for KerberosConfig {
    fn default() -> Self {
        KerberosConfig {
            service_name: "HTTP".into(),
            hostname: None,
            keytab: None,
            krb5_config: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

fn bad_principal_part(s: &str) -> bool {
    s.is_empty() || s.contains(|c: char| c == '@' || c == '/' || c == '\\' || c.is_whitespace() || c.is_control())
}

impl KerberosConfig {
    /// Problems serde cannot see, as (key, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if bad_principal_part(&self.service_name) {
            problems.push((
                "service_name".into(),
                "must be a non-empty principal component without `@`, `/` or spaces (e.g. `HTTP`)".into(),
            ));
        }
        if let Some(host) = &self.hostname
            && bad_principal_part(host)
        {
            problems.push((
                "hostname".into(),
                "must be a host name without `@`, `/` or spaces (e.g. `quiver.example.com`)".into(),
            ));
        }
        for (key, path) in [("keytab", &self.keytab), ("krb5_config", &self.krb5_config)] {
            if let Some(path) = path {
                if path.as_os_str().is_empty() {
                    problems.push((key.into(), "must not be empty".into()));
                } else if !path.is_file() {
                    problems.push((key.into(), format!("{} is not a readable file", path.display())));
                }
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_token_bytes) {
            problems.push(("max_token_bytes".into(), "must be between 1024 and 16777216".into()));
        }
        problems
    }

    /// The acceptor principal in GSSAPI host-based form (`HTTP@host`), or `None` when any host
    /// of the service is accepted.
    pub fn acceptor_name(&self) -> Option<String> {
        self.hostname.as_ref().map(|host| format!("{}@{host}", self.service_name))
    }

    /// The environment variables the MIT library must see for this config: `KRB5_KTNAME`
    /// (`FILE:<keytab>`) and `KRB5_CONFIG`, for those that are configured.
    pub fn process_env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = Vec::new();
        if let Some(keytab) = &self.keytab {
            let mut value = OsString::from("FILE:");
            value.push(keytab.as_os_str());
            env.push(("KRB5_KTNAME", value));
        }
        if let Some(conf) = &self.krb5_config {
            env.push(("KRB5_CONFIG", conf.as_os_str().to_owned()));
        }
        env
    }

    /// The part of [`process_env`](Self::process_env) the current process does not have yet.
    /// `KRB5_KTNAME` counts as present when it names the keytab with or without `FILE:`.
    pub fn missing_process_env(&self) -> Vec<(&'static str, OsString)> {
        self.process_env()
            .into_iter()
            .filter(|(key, wanted)| {
                let Some(current) = std::env::var_os(key) else { return true };
                let plain = wanted.to_str().and_then(|w| w.strip_prefix("FILE:")).map(OsString::from);
                current != *wanted && Some(&current) != plain.as_ref()
            })
            .collect()
    }

    /// Makes the process environment match [`process_env`](Self::process_env) by re-executing
    /// the current binary with the same arguments and the missing variables added. Returns
    /// `Ok(())` at once when nothing is missing; on success it does not return. Call it first
    /// thing in `main`, before any thread or runtime starts.
    #[cfg(unix)]
    pub fn reexec_with_process_env(&self) -> std::io::Result<()> {
        use std::os::unix::process::CommandExt;
        let missing = self.missing_process_env();
        if missing.is_empty() {
            return Ok(());
        }
        // Guard against a loop should the variables not survive exec.
        if std::env::var_os("QUIVER_KRB5_REEXEC").is_some() {
            return Err(std::io::Error::other(format!(
                "the environment still lacks {} after re-executing",
                missing.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            )));
        }
        let exe = std::env::current_exe()?;
        Err(std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(missing)
            .env("QUIVER_KRB5_REEXEC", "1")
            .exec())
    }
}

#[cfg(feature = "kerberos")]
pub use acceptor::KerberosAuthenticator;

#[cfg(feature = "kerberos")]
mod acceptor {
    use std::path::Path;

    use async_trait::async_trait;
    use libgssapi::context::{CtxFlags, SecurityContext, ServerCtx};
    use libgssapi::credential::{Cred, CredUsage};
    use libgssapi::name::Name;
    use libgssapi::oid::GSS_NT_HOSTBASED_SERVICE;

    use super::KerberosConfig;
    use crate::{AuthError, Authenticator, Credentials, Identity};

    /// The method name in config, logs and metrics.
    const METHOD: &str = "kerberos";

    /// Accepts SPNEGO (and raw Kerberos 5) `Negotiate` tokens for the configured service. One
    /// round trip: the client's first token must complete the context, as it does for Kerberos
    /// (multi-round SPNEGO negotiations, e.g. NTLM fallbacks, are refused).
    pub struct KerberosAuthenticator {
        cred: Cred,
        service_name: String,
        max_token_bytes: usize,
    }

    impl std::fmt::Debug for KerberosAuthenticator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("KerberosAuthenticator")
                .field("service_name", &self.service_name)
                .field("max_token_bytes", &self.max_token_bytes)
                .finish_non_exhaustive()
        }
    }

    impl KerberosAuthenticator {
        /// Checks the keytab and acquires the service credential. Fails with a message naming
        /// the keytab when it is unreadable, not a keytab, not the one the process environment
        /// selects (see [`KerberosConfig::process_env`]), or lacks a key for the principal.
        pub fn new(config: &KerberosConfig) -> Result<Self, String> {
            let problems = config.validate();
            if !problems.is_empty() {
                let list: Vec<String> = problems.iter().map(|(k, r)| format!("{k}: {r}")).collect();
                return Err(format!("kerberos: {}", list.join("; ")));
            }
            if let Some(keytab) = &config.keytab {
                check_keytab_file(keytab)?;
            }
            let missing = config.missing_process_env();
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(|(k, v)| format!("{k}={}", v.to_string_lossy())).collect();
                return Err(format!(
                    "kerberos: the process environment must select the configured files: set {} \
                     (the MIT library reads them from the environment; \
                     see KerberosConfig::reexec_with_process_env)",
                    list.join(" ")
                ));
            }
            let keytab =
                config.keytab.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the default keytab".into());
            let name = match config.acceptor_name() {
                Some(name) => Some(
                    Name::new(name.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
                        .map_err(|e| format!("kerberos: invalid service name {name}: {e}"))?,
                ),
                None => None,
            };
            let cred = Cred::acquire(name.as_ref(), None, CredUsage::Accept, None).map_err(|e| {
                let principal = config.acceptor_name().unwrap_or_else(|| format!("{}/*", config.service_name));
                format!("kerberos: no usable key for {principal} in {keytab}: {}", e.to_string().trim())
            })?;
            Ok(KerberosAuthenticator {
                cred,
                service_name: config.service_name.clone(),
                max_token_bytes: config.max_token_bytes,
            })
        }
    }

    /// Reads the keytab up front so a permission or path mistake is reported at start-up with
    /// the file's name, not as an opaque GSSAPI status on the first login.
    fn check_keytab_file(path: &Path) -> Result<(), String> {
        let bytes = std::fs::read(path).map_err(|e| format!("kerberos: cannot read keytab {}: {e}", path.display()))?;
        // MIT keytab files start with version 0x0501 or 0x0502.
        if bytes.len() < 2 || bytes[0] != 5 || !(1..=2).contains(&bytes[1]) {
            return Err(format!("kerberos: {} is not a keytab file", path.display()));
        }
        if bytes.len() == 2 {
            return Err(format!("kerberos: keytab {} holds no keys", path.display()));
        }
        Ok(())
    }

    fn denied(what: &str, e: libgssapi::error::Error) -> AuthError {
        AuthError::Denied(format!("{what}: {}", e.to_string().trim()))
    }

    /// One acceptance, start to end on the calling (blocking) thread: GSSAPI contexts must not
    /// be shared between threads.
    fn accept(cred: Cred, token: &[u8], service_name: &str) -> Result<Identity, AuthError> {
        let mut ctx = ServerCtx::new(Some(cred));
        let reply = ctx.step(token, None).map_err(|e| denied("GSSAPI refused the Negotiate token", e))?;
        if !ctx.is_complete() {
            return Err(AuthError::Denied("multi-round SPNEGO is not supported".into()));
        }
        let flags = ctx.flags().map_err(|e| denied("GSSAPI context flags", e))?;
        if flags.contains(CtxFlags::GSS_C_ANON_FLAG) {
            return Err(AuthError::Denied("anonymous Kerberos principals are not accepted".into()));
        }
        let target = display(&ctx.target_name().map_err(|e| denied("GSSAPI acceptor name", e))?)?;
        // Without a configured host any key in the keytab would do; insist on the service.
        if !target.starts_with(&format!("{service_name}/")) {
            return Err(AuthError::Denied(format!("ticket is for {target}, not a {service_name}/ principal")));
        }
        let principal = display(&ctx.source_name().map_err(|e| denied("GSSAPI client name", e))?)?;
        if principal.is_empty() {
            return Err(AuthError::Denied("empty client principal".into()));
        }
        let mut identity = Identity::new(principal.clone(), METHOD);
        if let Some((_, realm)) = principal.rsplit_once('@') {
            identity.attributes.insert("realm".into(), realm.to_string());
        }
        identity.attributes.insert("principal".into(), principal);
        identity.reply_token = reply.map(|buf| buf.to_vec()).filter(|t| !t.is_empty());
        Ok(identity)
    }

    fn display(name: &Name) -> Result<String, AuthError> {
        let buf = name.display_name().map_err(|e| denied("GSSAPI name", e))?;
        String::from_utf8(buf.to_vec()).map_err(|_| AuthError::Denied("principal name is not UTF-8".into()))
    }

    #[async_trait]
    impl Authenticator for KerberosAuthenticator {
        fn name(&self) -> &'static str {
            METHOD
        }

        async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError> {
            let Credentials::Negotiate(token) = credentials else {
                return Ok(None);
            };
            if token.is_empty() {
                return Err(AuthError::Denied("empty Negotiate token".into()));
            }
            if token.len() > self.max_token_bytes {
                return Err(AuthError::Denied(format!(
                    "Negotiate token of {} bytes exceeds max_token_bytes ({})",
                    token.len(),
                    self.max_token_bytes
                )));
            }
            let (cred, token, service) = (self.cred.clone(), token.clone(), self.service_name.clone());
            let identity = tokio::task::spawn_blocking(move || accept(cred, &token, &service))
                .await
                .map_err(|e| AuthError::Unavailable(format!("kerberos acceptor failed: {e}")))??;
            Ok(Some(identity))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn unreadable_or_bogus_keytab_is_named() {
            let dir = tempfile::tempdir().expect("tempdir");
            let missing = dir.path().join("missing.keytab");
            let config = KerberosConfig { keytab: Some(missing.clone()), ..Default::default() };
            let err = KerberosAuthenticator::new(&config).expect_err("missing keytab");
            assert!(err.contains(&missing.display().to_string()), "{err}");

            let bogus = dir.path().join("bogus.keytab");
            std::fs::write(&bogus, b"not a keytab").expect("write");
            assert!(check_keytab_file(&bogus).expect_err("bogus").contains("is not a keytab file"));
            let empty = dir.path().join("empty.keytab");
            std::fs::write(&empty, [5u8, 2]).expect("write");
            assert!(check_keytab_file(&empty).expect_err("empty").contains("holds no keys"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_trino_style_keys() {
        let config: KerberosConfig = serde_json::from_str("{}").expect("empty");
        assert_eq!(config.service_name, "HTTP");
        assert_eq!(config.max_token_bytes, 64 * 1024);
        assert_eq!(config.acceptor_name(), None);
        assert!(config.validate().is_empty());
        assert!(config.process_env().is_empty());

        let config: KerberosConfig =
            serde_json::from_str(r#"{"service_name": "quiver", "hostname": "gw.example.com"}"#).expect("parse");
        assert_eq!(config.acceptor_name().as_deref(), Some("quiver@gw.example.com"));
        assert!(serde_json::from_str::<KerberosConfig>(r#"{"service-name": "x"}"#).is_err());
    }

    #[test]
    fn validate_names_each_bad_key() {
        let config = KerberosConfig {
            service_name: "HTTP/x".into(),
            hostname: Some("a b".into()),
            keytab: Some("/nonexistent/quiver.keytab".into()),
            krb5_config: Some("".into()),
            max_token_bytes: 10,
        };
        let keys: Vec<String> = config.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["service_name", "hostname", "keytab", "krb5_config", "max_token_bytes"]);
    }

    #[test]
    fn process_env_names_the_files() {
        let config = KerberosConfig {
            keytab: Some("/k/service.keytab".into()),
            krb5_config: Some("/k/krb5.conf".into()),
            ..Default::default()
        };
        assert_eq!(
            config.process_env(),
            vec![("KRB5_KTNAME", "FILE:/k/service.keytab".into()), ("KRB5_CONFIG", "/k/krb5.conf".into())]
        );
        // The test process does not point at /k/..., so both are missing.
        assert_eq!(config.missing_process_env().len(), 2);
    }
}
