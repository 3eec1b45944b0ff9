//! Shared fixtures: start gateways and workers on loopback port 0, connect clients, collect results.

use std::net::SocketAddr;
use std::path::Path;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use prost::Message;
use quiver_engine::config::{CatalogConfig, EngineConfig};
use quiver_gateway::config::{AuthMethod, PoolConfig, QuiverConfig};
use quiver_gateway::{RunningGateway, start};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// The engine every test gateway embeds: TPC-H `tpch.tiny` plus an empty `memory.default`.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        target_partitions: Some(2),
        catalogs: vec![
            CatalogConfig::Tpch { name: "tpch".into(), scale_factor: 0.01, schema: None },
            CatalogConfig::Memory { name: "memory".into(), schemas: vec!["default".into()] },
        ],
        ..Default::default()
    }
}

/// A gateway config on loopback port 0 with one embedded pool.
pub fn gateway_config() -> QuiverConfig {
    let mut cfg = QuiverConfig::embedded_default(0.01);
    cfg.server.flight_addr = "127.0.0.1:0".into();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.engine = engine_config();
    cfg
}

/// Writes a password file with alice/alice-secret (analysts) and bob/bob-secret.
pub fn password_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("password.db");
    let alice = quiver_auth::hash_password("alice-secret").expect("hash");
    let bob = quiver_auth::hash_password("bob-secret").expect("hash");
    std::fs::write(&path, format!("alice:{alice}:analysts\nbob:{bob}\n")).expect("write password file");
    path
}

/// A gateway with password-file authentication.
pub fn password_config(dir: &Path) -> QuiverConfig {
    let mut cfg = gateway_config();
    cfg.auth.methods = vec![AuthMethod::PasswordFile];
    cfg.auth.password_file = Some(password_file(dir));
    // Everyone-is-admin is for open mode only.
    cfg.admin.users.clear();
    cfg
}

/// Starts a gateway.
pub async fn gateway(cfg: QuiverConfig) -> RunningGateway {
    start(cfg).await.expect("gateway starts")
}

/// A standalone engine worker on 127.0.0.1:0; returns its address and a stop handle.
pub async fn worker(cfg: EngineConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    worker_at(cfg, "127.0.0.1:0").await
}

/// A standalone engine worker on `addr` (to restart one where it was).
pub async fn worker_at(cfg: EngineConfig, addr: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let engine = quiver_engine::Engine::start(&cfg).await.expect("engine starts");
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, _task) = quiver_gateway::start_engine(engine, listener).await;
    (addr, stop)
}

/// A pool config pointing at remote workers.
pub fn remote_pool(name: &str, addrs: &[SocketAddr]) -> PoolConfig {
    PoolConfig::new(name, false, addrs.iter().map(|a| format!("grpc://{a}")).collect())
}

/// A channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

/// A Flight SQL client that has done a Basic handshake as `user`.
pub async fn client_as(addr: SocketAddr, user: &str, password: &str) -> FlightSqlServiceClient<Channel> {
    let mut client = FlightSqlServiceClient::new(channel(addr).await);
    client.handshake(user, password).await.expect("handshake");
    client
}

/// A Flight SQL client for an open-mode gateway or a worker (no handshake).
pub async fn client(addr: SocketAddr) -> FlightSqlServiceClient<Channel> {
    FlightSqlServiceClient::new(channel(addr).await)
}

/// Fetches every endpoint of `info`.
pub async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("endpoint has a ticket");
        let stream = client.do_get(ticket).await.expect("do_get");
        let mut batches: Vec<RecordBatch> = stream.try_collect().await.expect("stream");
        out.append(&mut batches);
    }
    out
}

/// Runs `sql` and returns the batches.
pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    fetch(client, info).await
}

/// Rows in `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The batches as a table of text, for exact comparisons.
pub fn pretty(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).expect("format").to_string()
}

/// A raw Flight client (for asserting status codes, which the SQL client hides).
pub async fn raw(addr: SocketAddr) -> FlightServiceClient<Channel> {
    FlightServiceClient::new(channel(addr).await)
}

/// GetFlightInfo for a statement on a raw client.
pub async fn raw_info(raw: &mut FlightServiceClient<Channel>, sql: &str) -> Result<FlightInfo, tonic::Status> {
    let cmd = CommandStatementQuery { query: sql.into(), transaction_id: None };
    raw.get_flight_info(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec())).await.map(|r| r.into_inner())
}

/// Statement results on a raw client; the status of whichever step fails.
pub async fn raw_query(raw: &mut FlightServiceClient<Channel>, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
    let info = raw_info(raw, sql).await?;
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let stream = raw.do_get(endpoint.ticket.unwrap_or_default()).await?.into_inner();
        out.append(&mut decode(stream).await?);
    }
    Ok(out)
}

/// The batches of a DoGet stream; a failure mid-stream is its status.
pub async fn decode(stream: tonic::Streaming<arrow_flight::FlightData>) -> Result<Vec<RecordBatch>, tonic::Status> {
    let decoded = FlightRecordBatchStream::new_from_flight_data(stream.map_err(arrow_flight::error::FlightError::from));
    decoded.try_collect().await.map_err(|e| match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    })
}

/// The value at (`column`, `row`) as text, whatever the string type (Utf8, Utf8View, ...).
pub fn text(batch: &RecordBatch, column: usize, row: usize) -> String {
    datafusion::arrow::util::display::array_value_to_string(batch.column(column), row).expect("displayable")
}

/// A raw HTTP/1.1 GET on `addr` with extra header lines; returns the whole response text.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    http_request(addr, "GET", path, headers).await
}

/// A raw HTTP/1.1 request without a body; returns the whole response text.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// `authorization: Basic ...` for `user`/`password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The claims of a gateway session token (`qv1.<payload>.<mac>`), read without verifying.
pub fn token_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let token = token.trim_start_matches("Bearer ");
    let payload = token.split('.').nth(1).expect("qv1 token has a payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&json).expect("json claims")
}

/// The JSON body of an HTTP response text.
pub fn json_body(response: &str) -> serde_json::Value {
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}
