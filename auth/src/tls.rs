//! TLS client settings shared by everything that calls out (LDAP, JWKS/OIDC, remote OPA):
//! rustls with the ring provider, trusting exactly the CAs of a PEM file when one is
//! configured, the platform's roots otherwise.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// A rustls client config. Errors name the CA file.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    Ok(match ca_file {
        Some(path) => builder.with_root_certificates(roots(path)?).with_no_client_auth(),
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder.with_platform_verifier().map_err(|e| format!("TLS setup: {e}"))?.with_no_client_auth()
        }
    })
}

/// The certificates of a PEM file as trust roots; an empty file is an error.
fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let named = |e: String| format!("ca_file {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| named(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| named(e.to_string()))?).map_err(|e| named(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(named("no PEM certificate found".into()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_hold_a_certificate_and_errors_name_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").expect("write");
        let err = client_config(Some(&empty)).expect_err("no certificate");
        assert!(err.contains("empty.pem") && err.contains("no PEM certificate"), "{err}");
        let missing = client_config(Some(&dir.path().join("missing.pem"))).expect_err("missing");
        assert!(missing.contains("missing.pem"), "{missing}");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["ca".into()]).expect("params").self_signed(&key).expect("cert");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.pem()).expect("write");
        assert!(client_config(Some(&good)).is_ok());
    }
}
