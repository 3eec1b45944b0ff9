//! mTLS: the caller is whoever the client certificate names.
//!
//! The TLS layer (rustls, in the gateway) has already verified the certificate chain against
//! the configured client CA before any request is read; this method only reads the verified
//! leaf certificate and takes the user from its subject CN or a subject alternative name.
//! The chain's user mapping rules then apply (e.g. `(.*)@example\.com` -> `$1`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{AuthError, Authenticator, Credentials, Identity};

/// Which certificate field names the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateUserField {
    /// The subject's common name (CN).
    #[default]
    Cn,
    /// The first `rfc822Name` (e-mail) subject alternative name.
    SanEmail,
    /// The first `dNSName` subject alternative name.
    SanDns,
    /// The first URI subject alternative name (e.g. a SPIFFE id).
    SanUri,
}

/// `[auth.certificate]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateConfig {
    /// The field that names the user: `cn` (default), `san_email`, `san_dns` or `san_uri`.
    pub user_field: CertificateUserField,
}

/// Takes the user from a verified client certificate.
#[derive(Debug, Clone, Default)]
pub struct CertificateAuthenticator {
    config: CertificateConfig,
}

impl CertificateAuthenticator {
    /// A method reading `config.user_field`.
    pub fn new(config: CertificateConfig) -> Self {
        CertificateAuthenticator { config }
    }

    /// The identity a DER-encoded leaf certificate names.
    pub fn identity_of(&self, der: &[u8]) -> Result<Identity, AuthError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| AuthError::Denied(format!("client certificate does not parse: {e}")))?;
        let principal = match self.config.user_field {
            CertificateUserField::Cn => {
                cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string)
            }
            field => cert.subject_alternative_name().ok().flatten().and_then(|san| {
                san.value.general_names.iter().find_map(|name| match (field, name) {
                    (CertificateUserField::SanEmail, GeneralName::RFC822Name(v))
                    | (CertificateUserField::SanDns, GeneralName::DNSName(v))
                    | (CertificateUserField::SanUri, GeneralName::URI(v)) => Some(v.to_string()),
                    _ => None,
                })
            }),
        };
        let principal = principal.filter(|p| !p.trim().is_empty()).ok_or_else(|| {
            AuthError::Denied(format!("client certificate has no {:?} to take the user from", self.config.user_field))
        })?;
        let mut identity = Identity::new(principal, "certificate");
        identity.attributes.insert("subject".into(), cert.subject().to_string());
        identity.attributes.insert("serial".into(), cert.raw_serial_as_string());
        identity.attributes.insert("sha256".into(), hex(&Sha256::digest(der)));
        Ok(identity)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl Authenticator for CertificateAuthenticator {
    fn name(&self) -> &'static str {
        "certificate"
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError> {
        match credentials {
            Credentials::Certificate(der) => self.identity_of(der).map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[tokio::test]
    async fn user_comes_from_the_configured_field() {
        let der = cert(
            "alice",
            vec![
                rcgen::SanType::Rfc822Name("alice@example.com".try_into().expect("ia5")),
                rcgen::SanType::DnsName("etl.example.com".try_into().expect("ia5")),
                rcgen::SanType::URI("spiffe://quiver/etl".try_into().expect("ia5")),
            ],
        );
        let creds = Credentials::Certificate(der.clone());
        for (field, user) in [
            (CertificateUserField::Cn, "alice"),
            (CertificateUserField::SanEmail, "alice@example.com"),
            (CertificateUserField::SanDns, "etl.example.com"),
            (CertificateUserField::SanUri, "spiffe://quiver/etl"),
        ] {
            let auth = CertificateAuthenticator::new(CertificateConfig { user_field: field });
            let identity = auth.authenticate(&creds).await.expect("ok").expect("mine");
            assert_eq!(identity.user, user);
            assert_eq!(identity.method, "certificate");
            assert!(identity.attributes["subject"].contains("CN=alice"));
        }
    }

    #[tokio::test]
    async fn missing_field_garbage_and_other_credentials() {
        let auth = CertificateAuthenticator::new(CertificateConfig { user_field: CertificateUserField::SanEmail });
        let no_san = Credentials::Certificate(cert("bob", vec![]));
        assert!(matches!(auth.authenticate(&no_san).await, Err(AuthError::Denied(_))));
        let garbage = Credentials::Certificate(vec![0x30, 0x82, 0xff]);
        assert!(matches!(auth.authenticate(&garbage).await, Err(AuthError::Denied(_))));
        assert_eq!(auth.authenticate(&Credentials::Bearer("x".into())).await, Ok(None));
    }
}
