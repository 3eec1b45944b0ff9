//! Authentication through the gateway: mTLS client certificates, the HTTP API behind the
//! same chain, user mapping, session-token key rotation, and the failure metrics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use arrow_flight::HandshakeRequest;
use arrow_flight::flight_service_client::FlightServiceClient;
use quiver_auth::{CaseFold, UserMappingRule};
use quiver_gateway::config::{AuthMethod, ClientAuth, TlsConfig};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::common::*;

/// A CA, the gateway's server certificate, and client certificates, written as PEM files.
struct Pki {
    dir: PathBuf,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca = params.self_signed(&ca_key).expect("ca");
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        Pki { dir, ca_params: params, ca_key }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate; returns (cert pem, key pem) and writes them as `<file>.pem/.key`.
    fn issue(&self, file: &str, cn: &str, sans: Vec<rcgen::SanType>, server: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let issuer = rcgen::Issuer::new(self.ca_params.clone(), &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).expect("write");
        std::fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).expect("write");
        (cert.pem(), key.serialize_pem())
    }
}

fn ip_san() -> rcgen::SanType {
    rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))
}

async fn tls_channel(addr: SocketAddr, ca: &Pki, client: Option<(String, String)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca.ca_file()).expect("ca")))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Channel::from_shared(format!("https://{addr}")).expect("uri").tls_config(tls).expect("tls");
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// Handshake with optional Basic credentials; returns the issued token's claims.
async fn handshake(channel: Channel, basic: Option<(&str, &str)>) -> Result<serde_json::Value, tonic::Status> {
    let mut raw = FlightServiceClient::new(channel);
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    if let Some((user, password)) = basic {
        request.metadata_mut().insert("authorization", basic_auth(user, password).parse().expect("header"));
    }
    let response = raw.handshake(request).await?;
    let token = response.metadata().get("authorization").expect("token").to_str().expect("ascii").to_string();
    Ok(token_claims(&token))
}

fn tls_gateway(dir: &Path, server: &Pki, clients: &Pki, client_auth: ClientAuth) -> quiver_gateway::QuiverConfig {
    server.issue("server", "quiver gateway", vec![ip_san()], true);
    let mut cfg = password_config(dir);
    cfg.server.tls = Some(TlsConfig {
        cert_file: server.dir.join("server.pem"),
        key_file: server.dir.join("server.key"),
        client_ca_file: Some(clients.ca_file()),
        client_auth,
    });
    cfg.auth.methods = vec![AuthMethod::Certificate, AuthMethod::PasswordFile];
    cfg
}

#[tokio::test]
async fn client_certificates_name_the_user_and_passwords_still_work_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Pki::new(dir.path(), "servers");
    let client_ca = Pki::new(dir.path(), "clients");
    let gw = gateway(tls_gateway(dir.path(), &server_ca, &client_ca, ClientAuth::Optional)).await;

    // A certificate from the client CA: the user is its CN.
    let carol = client_ca.issue("carol", "carol", vec![], false);
    let claims = handshake(tls_channel(gw.flight_addr, &server_ca, Some(carol.clone())).await.expect("tls"), None)
        .await
        .expect("certificate login");
    assert_eq!(claims["u"], "carol");
    assert_eq!(claims["m"], "certificate");

    // Queries run with the certificate alone.
    let channel = tls_channel(gw.flight_addr, &server_ca, Some(carol)).await.expect("tls");
    let mut sql = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    assert_eq!(rows(&query(&mut sql, "SELECT * FROM region").await), 5);

    // No certificate (optional): a password over TLS still works; nothing at all does not.
    let claims = handshake(
        tls_channel(gw.flight_addr, &server_ca, None).await.expect("tls without cert"),
        Some(("alice", "alice-secret")),
    )
    .await
    .expect("password login");
    assert_eq!(claims["u"], "alice");
    let err = handshake(tls_channel(gw.flight_addr, &server_ca, None).await.expect("tls"), None)
        .await
        .expect_err("no credentials");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    // A certificate from another CA fails the TLS handshake (or the first call).
    let rogue_ca = Pki::new(dir.path(), "rogue");
    let mallory = rogue_ca.issue("mallory", "carol", vec![], false);
    let outcome = match tls_channel(gw.flight_addr, &server_ca, Some(mallory)).await {
        Err(e) => Err(e),
        Ok(channel) => handshake(channel, None).await.map_err(|s| s.to_string()),
    };
    assert!(outcome.is_err(), "a rogue CA's certificate was accepted: {outcome:?}");

    // Plaintext clients cannot talk to the TLS port.
    let plain = Channel::from_shared(format!("http://{}", gw.flight_addr)).expect("uri").connect().await;
    if let Ok(plain) = plain {
        assert!(handshake(plain, Some(("alice", "alice-secret"))).await.is_err());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn required_client_auth_refuses_connections_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Pki::new(dir.path(), "servers");
    let client_ca = Pki::new(dir.path(), "clients");
    let gw = gateway(tls_gateway(dir.path(), &server_ca, &client_ca, ClientAuth::Required)).await;
    let outcome = match tls_channel(gw.flight_addr, &server_ca, None).await {
        Err(e) => Err(e),
        Ok(channel) => handshake(channel, Some(("alice", "alice-secret"))).await.map_err(|s| s.to_string()),
    };
    assert!(outcome.is_err(), "a connection without a certificate was served: {outcome:?}");
    // With a certificate AND a password, the password names the user (the header wins).
    let dave = client_ca.issue("dave", "dave", vec![], false);
    let claims =
        handshake(tls_channel(gw.flight_addr, &server_ca, Some(dave)).await.expect("tls"), Some(("bob", "bob-secret")))
            .await
            .expect("login");
    assert_eq!(claims["u"], "bob");
    assert_eq!(claims["m"], "password-file");
    gw.shutdown().await;
}

#[tokio::test]
async fn user_mapping_rules_apply_to_certificate_principals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Pki::new(dir.path(), "servers");
    let client_ca = Pki::new(dir.path(), "clients");
    let mut cfg = tls_gateway(dir.path(), &server_ca, &client_ca, ClientAuth::Optional);
    cfg.auth.certificate.user_field = quiver_auth::CertificateUserField::SanEmail;
    cfg.auth.user_mapping = vec![
        UserMappingRule { pattern: r"root@.*".into(), user: "$1".into(), allow: false, case: CaseFold::Keep },
        UserMappingRule {
            pattern: r"(.*)@corp\.example".into(),
            user: "$1".into(),
            allow: true,
            case: CaseFold::Lower,
        },
    ];
    let gw = gateway(cfg).await;
    let email = |e: &str| rcgen::SanType::Rfc822Name(e.try_into().expect("ia5"));
    let erin = client_ca.issue("erin", "Erin Example", vec![email("Erin@corp.example")], false);
    let claims = handshake(tls_channel(gw.flight_addr, &server_ca, Some(erin)).await.expect("tls"), None)
        .await
        .expect("mapped login");
    assert_eq!(claims["u"], "erin");
    for (file, address) in [("root", "root@corp.example"), ("outsider", "x@elsewhere.example")] {
        let cert = client_ca.issue(file, file, vec![email(address)], false);
        let err = handshake(tls_channel(gw.flight_addr, &server_ca, Some(cert)).await.expect("tls"), None)
            .await
            .expect_err("refused by mapping");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(err.message(), "invalid credentials", "the reason stays in the server log");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn http_api_uses_the_same_authentication_and_counts_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(password_config(dir.path())).await;
    let health = http_get(gw.http_addr, "/health", &[]).await;
    assert!(health.starts_with("HTTP/1.1 200"), "probes need no credentials: {health}");

    let anonymous = http_get(gw.http_addr, "/v1/whoami", &[]).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(anonymous.to_ascii_lowercase().contains("www-authenticate: basic"), "{anonymous}");
    let wrong = http_get(gw.http_addr, "/v1/whoami", &[("Authorization", &basic_auth("alice", "nope"))]).await;
    assert!(wrong.starts_with("HTTP/1.1 401") && wrong.contains("invalid credentials"), "{wrong}");

    let alice = http_get(gw.http_addr, "/v1/whoami", &[("Authorization", &basic_auth("alice", "alice-secret"))]).await;
    assert!(alice.starts_with("HTTP/1.1 200"), "{alice}");
    assert!(alice.contains(r#""user":"alice""#) && alice.contains("analysts"), "{alice}");

    // A token from a Flight handshake works on HTTP too.
    let flight = client_as(gw.flight_addr, "bob", "bob-secret").await;
    let token = format!("Bearer {}", flight.token().expect("token"));
    let bob = http_get(gw.http_addr, "/v1/whoami", &[("Authorization", &token)]).await;
    assert!(bob.contains(r#""user":"bob""#) && bob.contains(r#""method":"password-file""#), "{bob}");

    let metrics = http_get(gw.http_addr, "/metrics", &[("Authorization", &token)]).await;
    assert!(
        metrics.contains(
            r#"quiver_auth_attempts_total{method="password-file",result="failure",reason="invalid_credentials"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"method="chain",result="failure",reason="unsupported""#), "{metrics}");
    assert!(metrics.contains(r#"method="token",result="success""#), "{metrics}");
    gw.shutdown().await;
}

#[tokio::test]
async fn rotated_secrets_keep_old_tokens_valid_until_the_old_secret_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old-secret");
    let new = dir.path().join("new-secret");
    std::fs::write(&old, "old-secret-0123456789abcdef0123456789").expect("secret");
    std::fs::write(&new, "new-secret-0123456789abcdef0123456789").expect("secret");
    let mut before = password_config(dir.path());
    before.server.secret_file = Some(old.clone());
    let mut during = before.clone();
    during.server.secret_file = Some(new.clone());
    during.server.previous_secret_files = vec![old];
    let mut after = before.clone();
    after.server.secret_file = Some(new);

    let (a, b, c) = (gateway(before).await, gateway(during).await, gateway(after).await);
    let on_a = client_as(a.flight_addr, "alice", "alice-secret").await;
    let old_token = on_a.token().expect("token").clone();
    let info = on_a.clone().execute("SELECT * FROM region".into(), None).await.expect("info");

    // The rotated replica accepts the old token and redeems the old ticket.
    let mut on_b = client(b.flight_addr).await;
    on_b.set_token(old_token.clone());
    assert_eq!(rows(&fetch(&mut on_b, info).await), 5);
    // New tokens from the rotated replica are signed with the new secret only.
    let fresh = client_as(b.flight_addr, "alice", "alice-secret").await.token().expect("token").clone();
    let mut on_a_with_new = raw(a.flight_addr).await;
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", format!("Bearer {fresh}").parse().expect("header"));
    assert!(on_a_with_new.handshake(request).await.is_err(), "the old replica cannot know the new secret");

    // Once the old secret is dropped, old tokens stop working.
    let mut on_c = raw(c.flight_addr).await;
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", format!("Bearer {old_token}").parse().expect("header"));
    let err = on_c.handshake(request).await.expect_err("old token after rotation");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}
