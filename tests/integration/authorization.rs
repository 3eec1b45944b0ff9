//! Authorization through the gateway: Trino operations on every path, row filters and column
//! masks applied by plan rewrite, and each known bypass class as its own test, with the
//! expected answer computed on the worker directly (no policy there).
//!
//! Users (password file): alice and carol are `analysts` (EUROPE and AMERICA in
//! conf/policies/data.json), priya is an analyst in `privacy`, erin is in `engineers`, mallory
//! has no group.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Schema;
use futures::TryStreamExt;
use prost::Message;
use quiver_gateway::RunningGateway;
use quiver_gateway::config::{AuthMethod, AuthorizationConfig, QuiverConfig};
use quiver_policies::opa::OpaConfig;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

/// EUROPE's nation keys in conf/policies/data.json (alice's region).
const EUROPE: &str = "6, 7, 19, 22, 23";

fn example_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies")
}

pub fn users_file(dir: &Path) -> PathBuf {
    let path = dir.join("users.db");
    let mut text = String::new();
    for (user, groups) in [
        ("alice", "analysts"),
        ("carol", "analysts"),
        ("priya", "analysts,privacy"),
        ("erin", "engineers"),
        ("mallory", ""),
    ] {
        let hash = quiver_auth::hash_password(&format!("{user}-secret")).expect("hash");
        text.push_str(&format!("{user}:{hash}:{groups}\n"));
    }
    std::fs::write(&path, text).expect("users file");
    path
}

/// The example OPA policy with every Trino entry point.
pub fn opa_config(path: &Path, reload_check_ms: u64) -> OpaConfig {
    let mut c = OpaConfig::embedded_trino(path);
    if let Some(e) = c.embedded.as_mut() {
        e.reload_check_ms = reload_check_ms;
    }
    c
}

pub fn policy_config(dir: &Path, opa: OpaConfig) -> QuiverConfig {
    let mut cfg = gateway_config();
    cfg.auth.methods = vec![AuthMethod::PasswordFile];
    cfg.auth.password_file = Some(users_file(dir));
    cfg.admin.users.clear();
    cfg.authorization = Some(AuthorizationConfig { opa: Some(opa), rules: None });
    cfg
}

/// A gateway with the example policies, and a client straight to its worker (no policy).
pub async fn example_gateway(dir: &Path) -> (RunningGateway, Direct) {
    let gw = gateway(policy_config(dir, opa_config(&example_policies(), 1000))).await;
    let direct = Direct::new(gw.engine_addr.expect("embedded engine")).await;
    (gw, direct)
}

/// The worker without the gateway: the ground truth.
pub struct Direct(FlightSqlServiceClient<Channel>);

impl Direct {
    pub async fn new(addr: SocketAddr) -> Self {
        let mut c = client(addr).await;
        c.set_header(quiver_engine::CATALOG_HEADER, "tpch");
        c.set_header(quiver_engine::SCHEMA_HEADER, "tiny");
        Direct(c)
    }

    pub async fn query(&mut self, sql: &str) -> Vec<RecordBatch> {
        query(&mut self.0, sql).await
    }

    pub async fn try_query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, String> {
        match self.0.execute(sql.to_string(), None).await {
            Ok(info) => {
                let mut out = Vec::new();
                for e in info.endpoint {
                    let stream = self.0.do_get(e.ticket.unwrap_or_default()).await.map_err(|e| e.to_string())?;
                    let mut b: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| e.to_string())?;
                    out.append(&mut b);
                }
                Ok(out)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn count(&mut self, sql: &str) -> i64 {
        single_i64(&self.query(sql).await)
    }
}

/// A caller with a session token, speaking raw Flight so status codes are visible.
pub struct User {
    raw: FlightServiceClient<Channel>,
    token: String,
}

impl User {
    pub async fn login(addr: SocketAddr, name: &str) -> Self {
        let c = client_as(addr, name, &format!("{name}-secret")).await;
        let token = c.token().expect("session token").clone();
        User { raw: raw(addr).await, token }
    }

    fn request<T>(&self, body: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(body);
        r.metadata_mut().insert("authorization", format!("Bearer {}", self.token).parse().expect("header"));
        r
    }

    async fn info(&mut self, descriptor: FlightDescriptor) -> Result<FlightInfo, tonic::Status> {
        self.info_with_status(descriptor, &[]).await.map(|(info, _)| info)
    }

    /// GetFlightInfo with extra request headers; the `x-quiver-cache` response header.
    pub async fn info_with_status(
        &mut self,
        descriptor: FlightDescriptor,
        headers: &[(&'static str, &str)],
    ) -> Result<(FlightInfo, String), tonic::Status> {
        let mut request = self.request(descriptor);
        for (k, v) in headers {
            request.metadata_mut().insert(*k, v.parse().expect("header value"));
        }
        let response = self.raw.get_flight_info(request).await?;
        let status = cache_status(response.metadata());
        Ok((response.into_inner(), status))
    }

    /// Runs `sql` with extra headers; the rows and the `x-quiver-cache` headers of
    /// GetFlightInfo and DoGet.
    pub async fn run_with(
        &mut self,
        sql: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<(Vec<RecordBatch>, String, String), tonic::Status> {
        let cmd = CommandStatementQuery { query: sql.into(), transaction_id: None };
        let (info, planned) =
            self.info_with_status(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()), headers).await?;
        let mut out = Vec::new();
        let mut served = String::new();
        for endpoint in info.endpoint {
            let request = self.request(endpoint.ticket.unwrap_or_default());
            let response = self.raw.do_get(request).await?;
            served = cache_status(response.metadata());
            out.append(&mut decode(response.into_inner()).await?);
        }
        Ok((out, planned, served))
    }

    /// GetFlightInfo for `sql` (planned and authorized, nothing run yet).
    pub async fn plan(&mut self, sql: &str) -> Result<FlightInfo, tonic::Status> {
        let cmd = CommandStatementQuery { query: sql.into(), transaction_id: None };
        self.info(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec())).await
    }

    /// A Flight action as this user; the result bodies.
    pub async fn action(&mut self, kind: &str, body: Vec<u8>) -> Result<Vec<bytes::Bytes>, tonic::Status> {
        let request = self.request(arrow_flight::Action { r#type: kind.into(), body: body.into() });
        let stream = self.raw.do_action(request).await?.into_inner();
        let results: Vec<arrow_flight::Result> = stream.try_collect().await?;
        Ok(results.into_iter().map(|r| r.body).collect())
    }

    /// DoGet of every endpoint of `info`.
    pub async fn fetch_info(&mut self, info: FlightInfo) -> Result<Vec<RecordBatch>, tonic::Status> {
        self.fetch(info).await
    }

    async fn fetch(&mut self, info: FlightInfo) -> Result<Vec<RecordBatch>, tonic::Status> {
        let mut out = Vec::new();
        for endpoint in info.endpoint {
            let request = self.request(endpoint.ticket.unwrap_or_default());
            let stream = self.raw.do_get(request).await?.into_inner();
            out.append(&mut decode(stream).await?);
        }
        Ok(out)
    }

    /// Runs `sql`; the status of whichever step fails.
    pub async fn run(&mut self, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        let cmd = CommandStatementQuery { query: sql.into(), transaction_id: None };
        let info = self.info(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec())).await?;
        self.fetch(info).await
    }

    pub async fn query(&mut self, sql: &str) -> Vec<RecordBatch> {
        self.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn count(&mut self, sql: &str) -> i64 {
        single_i64(&self.query(sql).await)
    }

    /// Runs `sql` expecting a refusal with `code`; returns the message.
    pub async fn refused(&mut self, sql: &str, code: Code) -> String {
        match self.run(sql).await {
            Ok(b) => panic!("{sql}: expected {code:?}, got {} rows", rows(&b)),
            Err(s) => {
                assert_eq!(s.code(), code, "{sql}: {s}");
                s.message().to_string()
            }
        }
    }

    async fn tables(&mut self) -> Vec<RecordBatch> {
        let cmd = CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        };
        let info = self.info(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec())).await.expect("tables info");
        self.fetch(info).await.expect("tables")
    }
}

fn cache_status(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata.get("x-quiver-cache").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

pub fn single_i64(batches: &[RecordBatch]) -> i64 {
    let b = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
    let col =
        datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Int64).expect("integer");
    col.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0)
}

pub fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            out.push(text(b, column, i));
        }
    }
    out
}

// ---------------------------------------------------------------- operations

#[tokio::test]
async fn analyst_reads_only_her_region_with_pii_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;

    let expected = direct.count(&format!("SELECT count(*) FROM customer WHERE c_nationkey IN ({EUROPE})")).await;
    assert!(expected > 0);
    assert_eq!(alice.count("SELECT count(*) FROM customer").await, expected);
    let nations = strings(&alice.query("SELECT DISTINCT c_nationkey FROM customer ORDER BY 1").await, 0);
    assert_eq!(nations.join(", "), EUROPE);

    // Masked columns keep their names and types; the values are the mask's.
    let got = alice.query("SELECT c_custkey, c_phone, c_address FROM customer ORDER BY c_custkey LIMIT 5").await;
    let truth = direct
        .query(&format!(
            "SELECT c_custkey, c_phone, c_address FROM customer WHERE c_nationkey IN ({EUROPE}) ORDER BY c_custkey LIMIT 5"
        ))
        .await;
    let shape = |b: &RecordBatch| {
        b.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect::<Vec<_>>()
    };
    assert_eq!(shape(&got[0]), shape(&truth[0]));
    for (phone, real) in strings(&got, 1).iter().zip(strings(&truth, 1)) {
        assert_eq!(phone, &format!("XX-XXX-XXX-{}", &real[11..]), "{real}");
    }
    assert!(strings(&got, 2).iter().all(|a| a == "****"));
    gw.shutdown().await;
}

#[tokio::test]
async fn privacy_group_sees_pii_and_engineers_see_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct) = example_gateway(dir.path()).await;
    let mut priya = User::login(gw.flight_addr, "priya").await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    const ASIA: &str = "8, 9, 12, 18, 21";

    // priya: an ASIA analyst in `privacy` — her region only, PII in clear.
    let sql = "SELECT c_phone FROM customer ORDER BY c_custkey LIMIT 3";
    let truth = format!("SELECT c_phone FROM customer WHERE c_nationkey IN ({ASIA}) ORDER BY c_custkey LIMIT 3");
    assert_eq!(strings(&priya.query(sql).await, 0), strings(&direct.query(&truth).await, 0));
    // erin: an engineer — every row and table of tpch, PII still masked (not in `privacy`).
    let all = direct.count("SELECT count(*) FROM customer").await;
    assert_eq!(erin.count("SELECT count(*) FROM customer").await, all);
    let phones = strings(&erin.query(sql).await, 0);
    assert!(phones.iter().all(|p| p.starts_with("XX-XXX-XXX-")), "{phones:?}");
    assert_eq!(erin.count("SELECT count(*) FROM orders").await, direct.count("SELECT count(*) FROM orders").await);
    gw.shutdown().await;
}

#[tokio::test]
async fn select_from_columns_sees_exactly_the_columns_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;

    // c_acctbal is hidden from analysts, however it is reached.
    for sql in [
        "SELECT c_acctbal FROM customer",
        "SELECT * FROM customer",
        "SELECT x FROM (SELECT c_acctbal AS x FROM customer) s",
        "WITH c AS (SELECT c_acctbal AS a FROM customer) SELECT count(*) FROM c WHERE a > 0",
        "SELECT n.n_name FROM nation n JOIN customer c ON c.c_nationkey = n.n_nationkey WHERE c.c_acctbal > 0",
        "SELECT count(*) FROM nation WHERE n_nationkey IN (SELECT c_nationkey FROM customer WHERE c_acctbal > 0)",
        "SELECT c_name FROM customer ORDER BY c_acctbal",
    ] {
        // Named by alice, the hidden column is "no field" (as a missing one would be); reached
        // through `*`, the statement is denied without naming it.
        let e = alice.run(sql).await.expect_err(sql);
        if sql.contains("c_acctbal") {
            assert_eq!(e.code(), Code::InvalidArgument, "{sql}: {e}");
            assert!(
                e.message().contains("No field named") && !e.message().contains("Valid fields are customer.c_acctbal"),
                "{sql}: {e}"
            );
        } else {
            assert_eq!(e.code(), Code::PermissionDenied, "{sql}: {e}");
            assert!(e.message().contains("SelectFromColumns") && !e.message().contains("c_acctbal"), "{sql}: {e}");
        }
    }
    // Tables outside the analyst's list are "not found", like missing ones.
    let m = alice.refused("SELECT count(*) FROM orders", Code::NotFound).await;
    assert!(m.contains("tpch.tiny.orders"), "{m}");
    // Reading no column of a table still needs access to the table.
    assert!(alice.count("SELECT count(*) FROM customer").await > 0);
    assert!(alice.count("SELECT count(c_name) FROM customer").await > 0);
    // mallory may not even see the catalog.
    let mut mallory = User::login(gw.flight_addr, "mallory").await;
    let m = mallory.refused("SELECT count(*) FROM nation", Code::NotFound).await;
    assert!(m.contains("catalog `tpch` not found"), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn writes_are_checked_and_cannot_copy_protected_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let mut erin = User::login(gw.flight_addr, "erin").await;

    // memory is everyone's scratch space.
    alice.query("CREATE TABLE memory.default.scratch (id BIGINT, name VARCHAR)").await;
    alice.query("INSERT INTO memory.default.scratch VALUES (1, 'a')").await;
    // Copying rows of a filtered or masked table into one's own table would drop the policy.
    for sql in [
        "INSERT INTO memory.default.scratch SELECT c_custkey, c_name FROM tpch.tiny.customer",
        "CREATE TABLE memory.default.copy AS SELECT c_custkey, c_phone FROM tpch.tiny.customer",
    ] {
        let m = alice.refused(sql, Code::PermissionDenied).await;
        assert!(m.contains("tpch.tiny.customer") && m.contains("row filter or column mask"), "{sql}: {m}");
    }
    // Writing to tpch is not for analysts; each operation is named.
    for (sql, op) in [
        ("CREATE TABLE tpch.tiny.t2 (a INT)", "CreateTable"),
        ("DROP TABLE tpch.tiny.nation", "DropTable"),
        ("INSERT INTO tpch.tiny.region VALUES (9, 'X', 'y')", "InsertIntoTable"),
        ("DELETE FROM tpch.tiny.region", "DeleteFromTable"),
    ] {
        let m = alice.refused(sql, Code::PermissionDenied).await;
        assert!(m.contains(op), "{sql}: {m}");
    }
    // engineers have no filters: copying is fine for them.
    let n = erin.count("SELECT count(*) FROM tpch.tiny.region").await;
    erin.query("CREATE TABLE memory.default.regions AS SELECT * FROM tpch.tiny.region").await;
    assert_eq!(erin.count("SELECT count(*) FROM memory.default.regions").await, n);
    gw.shutdown().await;
}

// ---------------------------------------------------------------- bypass classes

#[tokio::test]
async fn bypass_view_applies_the_readers_filter_and_masks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let expected = direct.count(&format!("SELECT count(*) FROM customer WHERE c_nationkey IN ({EUROPE})")).await;
    let all = direct.count("SELECT count(*) FROM customer").await;

    // An engineer's view over the whole table: alice still gets only EUROPE, masked.
    erin.query(
        "CREATE VIEW memory.default.all_customers AS SELECT c_custkey, c_phone, c_nationkey FROM tpch.tiny.customer",
    )
    .await;
    assert_eq!(erin.count("SELECT count(*) FROM memory.default.all_customers").await, all);
    assert_eq!(alice.count("SELECT count(*) FROM memory.default.all_customers").await, expected);
    let phones = strings(&alice.query("SELECT c_phone FROM memory.default.all_customers LIMIT 5").await, 0);
    assert!(phones.iter().all(|p| p.starts_with("XX-XXX-XXX-")), "{phones:?}");
    // A view on a view.
    erin.query("CREATE VIEW memory.default.v2 AS SELECT * FROM memory.default.all_customers WHERE c_custkey > 0").await;
    assert_eq!(alice.count("SELECT count(*) FROM memory.default.v2").await, expected);
    // A view that reads a hidden column is denied to alice when she reads through it.
    erin.query("CREATE VIEW memory.default.balances AS SELECT c_custkey, c_acctbal FROM tpch.tiny.customer").await;
    let m = alice.refused("SELECT * FROM memory.default.balances", Code::PermissionDenied).await;
    assert!(m.contains("tpch.tiny.customer") && !m.contains("c_acctbal"), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn bypass_cte_subquery_union_and_self_join_are_all_filtered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let expected = direct.count(&format!("SELECT count(*) FROM customer WHERE c_nationkey IN ({EUROPE})")).await;

    let cases = [
        ("CTE", "WITH c AS (SELECT c_custkey FROM customer) SELECT count(*) FROM c", expected),
        (
            "nested CTE",
            "WITH a AS (SELECT * FROM nation), c AS (SELECT c_custkey FROM customer) SELECT count(*) FROM c",
            expected,
        ),
        ("derived table", "SELECT count(*) FROM (SELECT c_custkey FROM customer) s", expected),
        (
            "IN subquery",
            "SELECT count(*) FROM (SELECT c_custkey FROM customer) s WHERE c_custkey IN (SELECT c_custkey FROM customer)",
            expected,
        ),
        ("scalar subquery", "SELECT (SELECT count(*) FROM customer)", expected),
        (
            "UNION ALL",
            "SELECT count(*) FROM (SELECT c_custkey FROM customer UNION ALL SELECT c_custkey FROM customer) u",
            2 * expected,
        ),
        (
            "UNION",
            "SELECT count(*) FROM (SELECT c_custkey FROM customer UNION SELECT c_custkey FROM customer) u",
            expected,
        ),
        ("self-join", "SELECT count(*) FROM customer a JOIN customer b ON a.c_custkey = b.c_custkey", expected),
        (
            "outer self-join",
            "SELECT count(*) FROM customer a LEFT JOIN tpch.tiny.customer b ON a.c_custkey = b.c_custkey + 1",
            expected,
        ),
        ("qualified names", "SELECT count(tpch.tiny.customer.c_custkey) FROM tpch.tiny.customer", expected),
    ];
    for (name, sql, want) in cases {
        assert_eq!(alice.count(sql).await, want, "{name}: {sql}");
    }
    // The masked column stays masked wherever it comes out.
    let phones = strings(
        &alice
            .query(
                "SELECT p FROM (SELECT c_phone AS p FROM customer UNION ALL SELECT c_phone FROM customer) u LIMIT 20",
            )
            .await,
        0,
    );
    assert!(phones.iter().all(|p| p.starts_with("XX-XXX-XXX-")), "{phones:?}");
    // Predicates on a masked column see the mask, not the value.
    let real = strings(
        &direct.query(&format!("SELECT c_phone FROM customer WHERE c_nationkey IN ({EUROPE}) LIMIT 1")).await,
        0,
    );
    let probe = format!("SELECT count(*) FROM customer WHERE c_phone = '{}'", real[0]);
    assert_eq!(alice.count(&probe).await, 0, "{probe}");
    gw.shutdown().await;
}

#[tokio::test]
async fn bypass_explain_and_explain_analyze_show_no_filter_or_mask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    for sql in [
        "EXPLAIN SELECT c_custkey FROM customer",
        "EXPLAIN ANALYZE SELECT c_custkey FROM customer",
        "EXPLAIN VERBOSE SELECT c_phone FROM customer",
        "EXPLAIN SELECT count(*) FROM nation JOIN customer ON c_nationkey = n_nationkey",
    ] {
        let m = alice.refused(sql, Code::PermissionDenied).await;
        assert!(m.contains("row filter or column mask") && !m.contains("19, 22"), "{sql}: {m}");
    }
    // Without filters or masks EXPLAIN works as usual.
    let plan = format!("{:?}", erin.query("EXPLAIN SELECT c_custkey FROM customer").await);
    assert!(plan.contains("customer"), "{plan}");
    // erin's PII is masked: explaining a read of it is refused too.
    erin.refused("EXPLAIN SELECT c_phone FROM customer", Code::PermissionDenied).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn bypass_information_schema_and_metadata_list_only_what_the_caller_may_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let mut erin = User::login(gw.flight_addr, "erin").await;

    let tables = |b: &[RecordBatch]| strings(b, 0).into_iter().collect::<BTreeSet<_>>();
    let sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'tiny'";
    assert_eq!(
        tables(&alice.query(sql).await),
        ["customer", "nation", "region"].map(String::from).into_iter().collect()
    );
    assert_eq!(tables(&erin.query(sql).await).len(), 8);
    let cols = strings(
        &alice.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'customer'").await,
        0,
    );
    assert!(!cols.is_empty() && !cols.contains(&"c_acctbal".to_string()), "{cols:?}");
    let shown =
        tables(&alice.query("SHOW TABLES").await.iter().map(|b| b.project(&[2]).expect("name")).collect::<Vec<_>>());
    assert!(!shown.contains("orders") && shown.contains("customer"), "{shown:?}");

    // Flight SQL GetTables with schemas: the same three tables, without c_acctbal.
    let batches = alice.tables().await;
    let mut seen = BTreeSet::new();
    for b in &batches {
        let names = b.column_by_name("table_name").expect("table_name");
        let names =
            datafusion::arrow::compute::cast(names, &datafusion::arrow::datatypes::DataType::Utf8).expect("utf8");
        let schemas = b.column_by_name("table_schema").expect("table_schema").as_binary::<i32>().clone();
        for i in 0..b.num_rows() {
            let name = names.as_string::<i32>().value(i).to_string();
            let schema: Schema =
                datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer(schemas.value(i)).expect("schema");
            if name == "customer" {
                assert!(schema.field_with_name("c_acctbal").is_err(), "{schema:?}");
                assert!(schema.field_with_name("c_phone").is_ok());
            }
            seen.insert(name);
        }
    }
    assert!(seen.contains("customer") && !seen.contains("orders") && !seen.contains("lineitem"), "{seen:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn prepared_statements_are_filtered_and_checked_again_at_execution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct) = example_gateway(dir.path()).await;
    let mut alice = client_as(gw.flight_addr, "alice", "alice-secret").await;
    let expected = direct
        .count(&format!("SELECT count(*) FROM customer WHERE c_nationkey IN ({EUROPE}) AND c_custkey > 10"))
        .await;
    let mut stmt =
        alice.prepare("SELECT count(*) FROM customer WHERE c_custkey > ?".into(), None).await.expect("prepare");
    let params = RecordBatch::try_from_iter(vec![(
        "p",
        std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![10])) as _,
    )])
    .expect("params");
    stmt.set_parameters(params).expect("bind");
    let info = stmt.execute().await.expect("execute");
    assert_eq!(single_i64(&fetch(&mut alice, info).await), expected);
    // A prepared statement reading a hidden column is refused at creation.
    let err = alice.prepare("SELECT c_acctbal FROM customer".into(), None).await.expect_err("denied");
    assert!(err.to_string().contains("c_acctbal"), "{err}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------- a policy driven by data.json

const CUSTOM_POLICY: &str = r#"package trino

import rego.v1

default allow := true

batch contains i if {
	some i, _ in input.action.filterResources
}

rowFilters contains {"expression": e} if {
	some e in object.get(object.get(data.filters, input.context.identity.user, {}), input.action.resource.table.tableName, [])
}

batchColumnMasks contains {"index": i, "viewExpression": {"expression": m}} if {
	some i
	raw := input.action.filterResources[i]
	m := data.masks[input.context.identity.user][raw.column.tableName][raw.column.columnName]
}
"#;

/// A policy folder whose row filters and masks come from `data` (rewritten by the test; the
/// padding makes every version's size differ, so the reload never misses a change).
pub struct CustomPolicy {
    dir: PathBuf,
    version: usize,
}

impl CustomPolicy {
    pub fn new(dir: &Path, data: serde_json::Value) -> Self {
        let dir = dir.join("policy");
        std::fs::create_dir_all(&dir).expect("policy dir");
        std::fs::write(dir.join("policy.rego"), CUSTOM_POLICY).expect("rego");
        let mut p = CustomPolicy { dir, version: 0 };
        p.set(data);
        p
    }

    pub fn set(&mut self, mut data: serde_json::Value) {
        self.version += 1;
        data["pad"] = serde_json::Value::String("x".repeat(self.version));
        std::fs::write(self.dir.join("data.json"), data.to_string()).expect("data");
    }

    pub fn config(&self) -> OpaConfig {
        opa_config(&self.dir, 0)
    }
}

pub async fn custom_gateway(dir: &Path, data: serde_json::Value) -> (RunningGateway, Direct, CustomPolicy) {
    let policy = CustomPolicy::new(dir, data);
    let gw = gateway(policy_config(dir, policy.config())).await;
    let direct = Direct::new(gw.engine_addr.expect("embedded engine")).await;
    (gw, direct, policy)
}

#[tokio::test]
async fn bypass_error_oracles_never_see_hidden_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nation 1 is hidden from alice; nine rows in ten are visible, so DataFusion would
    // evaluate the whole conjunction on every row without the barrier.
    let data = serde_json::json!({"filters": {"alice": {"customer": ["c_nationkey <> 1"]}}});
    let (gw, mut direct, _policy) = custom_gateway(dir.path(), data).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let expected = direct.count("SELECT count(*) FROM customer WHERE c_nationkey <> 1").await;
    // A customer only the hidden rows have.
    let hidden = direct.count("SELECT min(c_custkey) FROM customer WHERE c_nationkey = 1").await;
    // `{t}` is the table: `customer` through the gateway, the same filter as a plain
    // subquery on the worker.
    let oracles = [
        "SELECT count(*) FROM {t} c WHERE 1 / (c_nationkey - 1) > -100".to_string(),
        "SELECT count(*) FROM {t} c WHERE c_custkey > 0 AND 1 / (c_nationkey - 1) > -100".to_string(),
        "SELECT count(*) FROM {t} c WHERE CAST(CASE WHEN c_nationkey = 1 THEN 'boom' ELSE '1' END AS INT) = 1"
            .to_string(),
        format!(
            "SELECT count(*) FROM {{t}} c JOIN nation n ON c.c_nationkey = n.n_nationkey AND 1 / (c.c_custkey - {hidden}) > -100"
        ),
        "SELECT count(*) FROM (SELECT c_nationkey FROM {t} c) s WHERE 1 / (c_nationkey - 1) > -100".to_string(),
        format!(
            "SELECT count(*) FROM {{t}} c WHERE c_custkey IN (SELECT c_custkey FROM {{t}} d WHERE 1 / (d.c_custkey - {hidden}) > -100)"
        ),
    ];
    for sql in oracles {
        // The oracle is real: with the same filter written as a plain WHERE, the worker
        // evaluates the user's predicate on the hidden rows and fails.
        let plain = sql.replace("{t}", "(SELECT * FROM customer WHERE c_nationkey <> 1)");
        let err = direct.try_query(&plain).await.expect_err(&plain);
        assert!(err.to_lowercase().contains("divide by zero") || err.contains("Cannot cast"), "{plain}: {err}");
        let sql = sql.replace("{t}", "customer");
        assert_eq!(alice.count(&sql).await, expected, "{sql}");
    }
    // A failure on a visible row is still reported.
    let m =
        alice.refused("SELECT count(*) FROM customer WHERE 1 / (c_nationkey - 2) > -100", Code::InvalidArgument).await;
    assert!(m.to_lowercase().contains("divide by zero"), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn several_filters_all_apply_and_expressions_use_the_current_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = serde_json::json!({
        "filters": {"alice": {"orders": ["o_orderstatus = 'F'", "o_totalprice > 100000"]}},
        "masks": {"alice": {"orders": {"o_clerk": "concat('seen-by-', current_user)"}}}
    });
    let (gw, mut direct, _policy) = custom_gateway(dir.path(), data).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let mut carol = User::login(gw.flight_addr, "carol").await;
    let both = direct.count("SELECT count(*) FROM orders WHERE o_orderstatus = 'F' AND o_totalprice > 100000").await;
    let first = direct.count("SELECT count(*) FROM orders WHERE o_orderstatus = 'F'").await;
    assert!(both > 0 && both < first);
    assert_eq!(alice.count("SELECT count(*) FROM orders").await, both);
    let clerks = strings(&alice.query("SELECT DISTINCT o_clerk FROM orders").await, 0);
    assert_eq!(clerks, vec!["seen-by-alice".to_string()]);
    // carol has no filter or mask: the statement goes to the worker as written.
    assert_eq!(carol.count("SELECT count(*) FROM orders").await, direct.count("SELECT count(*) FROM orders").await);
    gw.shutdown().await;
}

#[tokio::test]
async fn prepared_statement_whose_policy_changed_must_be_prepared_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = serde_json::json!({"filters": {"alice": {"nation": ["n_regionkey = 1"]}}});
    let (gw, _direct, mut policy) = custom_gateway(dir.path(), data).await;
    let mut alice = client_as(gw.flight_addr, "alice", "alice-secret").await;
    let mut stmt = alice.prepare("SELECT count(*) FROM nation".into(), None).await.expect("prepare");
    let info = stmt.execute().await.expect("execute");
    assert_eq!(single_i64(&fetch(&mut alice, info).await), 5);
    // The policy changes: the handle no longer matches what alice may see.
    policy.set(serde_json::json!({"filters": {"alice": {"nation": ["n_regionkey = 2"]}}}));
    let err = stmt.execute().await.expect_err("stale prepared statement");
    assert!(err.to_string().contains("prepare it again"), "{err}");
    let mut again = alice.prepare("SELECT count(*) FROM nation".into(), None).await.expect("prepare again");
    let info = again.execute().await.expect("execute");
    assert_eq!(single_i64(&fetch(&mut alice, info).await), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn broken_policy_expressions_and_files_fail_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = serde_json::json!({"filters": {"alice": {"nation": ["n_regionkey = = 1"]}}});
    let (gw, _direct, mut policy) = custom_gateway(dir.path(), data).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let m = alice.refused("SELECT count(*) FROM nation", Code::Unavailable).await;
    assert!(m.contains("row filter on tpch.tiny.nation"), "{m}");
    // A filter naming a column that does not exist is refused the same way.
    policy.set(serde_json::json!({"filters": {"alice": {"nation": ["no_such_column = 1"]}}}));
    let m = alice.refused("SELECT count(*) FROM nation", Code::Unavailable).await;
    assert!(m.contains("no_such_column"), "{m}");
    // The server kept running: with a good filter again, alice is served.
    policy.set(serde_json::json!({"filters": {"alice": {"nation": ["n_regionkey = 0"]}}}));
    assert_eq!(alice.count("SELECT count(*) FROM nation").await, 5);
    gw.shutdown().await;

    // A policy folder that does not load keeps the gateway from starting.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(bad.join("p.rego"), "package trino\nallow if {").expect("write");
    let err = quiver_gateway::start(policy_config(dir.path(), opa_config(&bad, 0))).await.expect_err("refused");
    assert!(err.to_string().contains("authorization.opa"), "{err}");
}

// ---------------------------------------------------------------- property test

/// Random predicates over TPC-H columns, the kind a row-filter policy writes.
struct Gen(rand::rngs::StdRng);

impl Gen {
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        use rand::Rng;
        items[self.0.random_range(0..items.len())]
    }

    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        use rand::Rng;
        self.0.random_range(lo..=hi)
    }

    fn atom(&mut self, table: &str) -> String {
        let op = self.pick(&["<", "<=", ">", ">=", "=", "<>"]).to_string();
        match (table, self.int(0, 3)) {
            ("customer", 0) => format!("c_nationkey {op} {}", self.int(0, 24)),
            ("customer", 1) => format!("c_acctbal {op} {}", self.int(-999, 9999)),
            ("customer", 2) => format!(
                "c_mktsegment IN ('{}', '{}')",
                self.pick(&["BUILDING", "AUTOMOBILE", "MACHINERY"]),
                self.pick(&["HOUSEHOLD", "FURNITURE", "BUILDING"])
            ),
            ("customer", _) => format!("c_custkey % {} = {}", self.int(2, 7), self.int(0, 1)),
            ("orders", 0) => format!("o_totalprice {op} {}", self.int(1000, 400000)),
            ("orders", 1) => format!("o_orderstatus = '{}'", self.pick(&["F", "O", "P"])),
            ("orders", 2) => format!("o_orderdate {op} DATE '199{}-0{}-15'", self.int(2, 8), self.int(1, 9)),
            ("orders", _) => format!("o_orderpriority LIKE '{}%'", self.int(1, 5)),
            ("lineitem", 0) => format!("l_quantity {op} {}", self.int(1, 50)),
            ("lineitem", 1) => format!("l_discount BETWEEN 0.0{} AND 0.0{}", self.int(0, 4), self.int(5, 9)),
            ("lineitem", 2) => format!(
                "l_shipmode IN ('{}', '{}')",
                self.pick(&["AIR", "MAIL", "SHIP"]),
                self.pick(&["TRUCK", "RAIL", "FOB"])
            ),
            ("lineitem", _) => format!("l_returnflag <> '{}'", self.pick(&["A", "N", "R"])),
            (_, 0) => format!("p_size {op} {}", self.int(1, 50)),
            (_, 1) => format!("p_brand = 'Brand#{}{}'", self.int(1, 5), self.int(1, 5)),
            (_, 2) => format!("p_retailprice {op} {}", self.int(900, 2000)),
            (_, _) => format!("p_container LIKE '{}%'", self.pick(&["SM", "LG", "MED", "JUMBO", "WRAP"])),
        }
    }

    fn predicate(&mut self, table: &str, depth: u32) -> String {
        match (depth, self.int(0, 4)) {
            (0, _) | (_, 0) => self.atom(table),
            (_, 1) => format!("NOT ({})", self.predicate(table, depth - 1)),
            (_, 2) => format!("({} OR {})", self.predicate(table, depth - 1), self.predicate(table, depth - 1)),
            (_, _) => format!("({} AND {})", self.predicate(table, depth - 1), self.predicate(table, depth - 1)),
        }
    }
}

/// For random row filters over TPC-H tables, what alice receives through the gateway equals
/// the filter applied directly on the worker — for the table alone, under a predicate of
/// her own, and joined with itself. Set `QUIVER_PROPTEST_SEED` to replay a failure.
#[tokio::test]
async fn property_random_row_filters_match_the_filter_applied_on_the_worker() {
    use rand::SeedableRng;
    let seed: u64 =
        std::env::var("QUIVER_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("QUIVER_PROPTEST_SEED={seed}");
    let mut g = Gen(rand::rngs::StdRng::seed_from_u64(seed));
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct, mut policy) = custom_gateway(dir.path(), serde_json::json!({})).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let keys = [("customer", "c_custkey"), ("orders", "o_orderkey"), ("lineitem", "l_orderkey"), ("part", "p_partkey")];
    for case in 0..24 {
        let (table, key) = keys[case % keys.len()];
        let filters: Vec<String> = (0..g.int(1, 2)).map(|_| g.predicate(table, 2)).collect();
        policy.set(serde_json::json!({"filters": {"alice": {table: filters}}}));
        let applied = filters.iter().map(|f| format!("({f})")).collect::<Vec<_>>().join(" AND ");
        let own = g.predicate(table, 1);
        let summary = format!("count(*), sum({key}), min({key}), max({key})");
        let pairs = [
            (format!("SELECT {summary} FROM {table}"), format!("SELECT {summary} FROM {table} WHERE {applied}")),
            (
                format!("SELECT {summary} FROM {table} WHERE {own}"),
                format!("SELECT {summary} FROM {table} WHERE ({own}) AND {applied}"),
            ),
            (
                format!("SELECT count(*) FROM {table} a JOIN {table} b ON a.{key} = b.{key}"),
                format!(
                    "SELECT count(*) FROM (SELECT * FROM {table} WHERE {applied}) a JOIN (SELECT * FROM {table} WHERE {applied}) b ON a.{key} = b.{key}"
                ),
            ),
        ];
        for (through_gateway, on_worker) in pairs {
            let got = pretty(&alice.query(&through_gateway).await);
            let want = pretty(&direct.query(&on_worker).await);
            assert_eq!(got, want, "seed {seed}, case {case}, filters {filters:?}: {through_gateway}");
        }
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------- remote OPA

/// A server speaking OPA's REST data API (`POST /v1/data/<path>` with `{"input": ...}`),
/// evaluating the example policy with regorus: no OPA binary can be installed from the
/// package registries this project may use.
struct FakeOpa {
    engine: regorus::Engine,
    delay_ms: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicUsize,
}

async fn opa_data_api(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<FakeOpa>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    body: String,
) -> axum::Json<serde_json::Value> {
    use std::sync::atomic::Ordering;
    s.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(s.delay_ms.load(Ordering::SeqCst))).await;
    let mut engine = s.engine.clone();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    engine.set_input(regorus::Value::from(doc.get("input").cloned().unwrap_or_default()));
    match engine.eval_rule(format!("data.{}", path.trim_matches('/').replace('/', "."))) {
        Ok(v) if v != regorus::Value::Undefined => {
            axum::Json(serde_json::json!({"result": serde_json::to_value(&v).unwrap_or_default()}))
        }
        _ => axum::Json(serde_json::json!({})),
    }
}

async fn fake_opa() -> (String, std::sync::Arc<FakeOpa>, tokio::sync::oneshot::Sender<()>) {
    let mut engine = regorus::Engine::new();
    let dir = example_policies();
    engine
        .add_policy("trino.rego".into(), std::fs::read_to_string(dir.join("trino.rego")).expect("rego"))
        .expect("policy");
    let data = std::fs::read_to_string(dir.join("data.json")).expect("data");
    engine.add_data(regorus::Value::from_json_str(&data).expect("json")).expect("data");
    let state = std::sync::Arc::new(FakeOpa { engine, delay_ms: 0.into(), requests: 0.into() });
    let app =
        axum::Router::new().route("/v1/data/{*path}", axum::routing::post(opa_data_api)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .ok()
    });
    (format!("http://{addr}/v1/data/trino"), state, stop)
}

#[tokio::test]
async fn remote_opa_decides_and_fails_closed_when_slow_or_down() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, opa, stop) = fake_opa().await;
    let mut c = OpaConfig::remote(format!("{base}/allow"));
    c.batch_policy_uri = Some(format!("{base}/batch"));
    c.row_filters_policy_uri = Some(format!("{base}/rowFilters"));
    c.batch_column_masking_policy_uri = Some(format!("{base}/batchColumnMasks"));
    c.decision_cache_ttl_ms = Some(0);
    if let Some(r) = c.remote.as_mut() {
        r.timeout_ms = 500;
    }
    let gw = gateway(policy_config(dir.path(), c)).await;
    let mut direct = Direct::new(gw.engine_addr.expect("engine")).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;

    let expected = direct.count(&format!("SELECT count(*) FROM customer WHERE c_nationkey IN ({EUROPE})")).await;
    assert_eq!(alice.count("SELECT count(*) FROM customer").await, expected);
    let phones = strings(&alice.query("SELECT c_phone FROM customer LIMIT 3").await, 0);
    assert!(phones.iter().all(|p| p.starts_with("XX-XXX-XXX-")), "{phones:?}");
    alice.refused("SELECT c_acctbal FROM customer", Code::InvalidArgument).await;
    assert!(opa.requests.load(Ordering::SeqCst) > 0, "the remote OPA decided");

    // Slower than the timeout: refused, not allowed.
    opa.delay_ms.store(2_000, Ordering::SeqCst);
    let m = alice.refused("SELECT count(*) FROM customer", Code::Unavailable).await;
    assert!(m.contains("authorization unavailable"), "{m}");
    // Down: refused the same way; the gateway keeps serving once OPA is back is not
    // needed here — the server is gone for good.
    opa.delay_ms.store(0, Ordering::SeqCst);
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = alice.refused("SELECT count(*) FROM customer", Code::Unavailable).await;
    assert!(m.contains("authorization unavailable"), "{m}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------- rules.json

#[tokio::test]
async fn trino_rules_json_authorizes_filters_and_masks_through_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = policy_config(dir.path(), opa_config(&example_policies(), 1000));
    let rules = quiver_policies::rules::RulesConfig { path: example_policies().join("rules.json"), reload_check_ms: 0 };
    cfg.authorization = Some(AuthorizationConfig { opa: None, rules: Some(rules) });
    let gw = gateway(cfg).await;
    let mut direct = Direct::new(gw.engine_addr.expect("engine")).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let mut mallory = User::login(gw.flight_addr, "mallory").await;

    // engineers: all of tpch, PII masked by the rules' column masks.
    let all = direct.count("SELECT count(*) FROM customer").await;
    assert_eq!(erin.count("SELECT count(*) FROM customer").await, all);
    let phones = strings(&erin.query("SELECT c_phone FROM customer LIMIT 3").await, 0);
    assert!(phones.iter().all(|p| p.starts_with("XX-XXX-XXX-")), "{phones:?}");
    // No rule for mallory's catalog access: a catalog she may not see is "not found".
    let m = mallory.refused("SELECT count(*) FROM nation", Code::NotFound).await;
    assert!(m.contains("catalog `tpch` not found"), "{m}");
    gw.shutdown().await;
}

/// The effective SQL of a rewritten statement is DataFusion's unparser output: all 22 TPC-H
/// queries, with a row filter on every table that keeps every row, answer exactly as the
/// originals on the worker — the rewrite changes which rows, never what the query means.
#[tokio::test]
async fn all_22_tpch_queries_survive_the_rewrite_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep_all = |column: &str| serde_json::json!([format!("{column} IS NOT NULL")]);
    let data = serde_json::json!({"filters": {"alice": {
        "customer": keep_all("c_custkey"), "orders": keep_all("o_orderkey"), "lineitem": keep_all("l_orderkey"),
        "part": keep_all("p_partkey"), "partsupp": keep_all("ps_partkey"), "supplier": keep_all("s_suppkey"),
        "nation": keep_all("n_nationkey"), "region": keep_all("r_regionkey"),
    }}});
    let (gw, mut direct, _policy) = custom_gateway(dir.path(), data).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    for (name, sql) in crate::tpch::queries() {
        let rewritten = alice.run(&sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = direct.query(&sql).await;
        assert_eq!(pretty(&rewritten), pretty(&expected), "{name} differs after the rewrite");
    }
    gw.shutdown().await;
}

/// Sum of `quiver_authz_decisions_total` for one operation, from /metrics.
async fn decisions_asked(gw: &RunningGateway, operation: &str) -> u64 {
    let metrics = http_get(gw.http_addr, "/metrics", &[("authorization", &basic_auth("erin", "erin-secret"))]).await;
    let label = format!("operation=\"{operation}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("quiver_authz_decisions_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_statement_asks_each_decision_once_and_the_rego_vm_answers_like_the_interpreter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let join = "SELECT n_name, count(*) FROM customer JOIN nation ON c_nationkey = n_nationkey \
                JOIN region ON n_regionkey = r_regionkey GROUP BY n_name ORDER BY n_name";
    let masked = "SELECT c_custkey, c_phone FROM customer ORDER BY c_custkey LIMIT 20";
    let mut answers = Vec::new();
    for engine in [quiver_policies::opa::RegoEngine::Interpreter, quiver_policies::opa::RegoEngine::Vm] {
        let opa = opa_config(&example_policies(), 1000).with_engine(engine);
        let gw = gateway(policy_config(dir.path(), opa)).await;
        let mut alice = User::login(gw.flight_addr, "alice").await;
        let before = |op: &'static str| decisions_asked(&gw, op);
        let (catalog0, select0, filters0) =
            (before("AccessCatalog").await, before("SelectFromColumns").await, before("GetRowFilters").await);
        let by_nation = alice.query(join).await;
        // One catalog, three tables: AccessCatalog once (at admission, not again per table),
        // SelectFromColumns and row filters once per table.
        assert_eq!(decisions_asked(&gw, "AccessCatalog").await - catalog0, 1, "{engine:?}");
        assert_eq!(decisions_asked(&gw, "SelectFromColumns").await - select0, 3, "{engine:?}");
        assert_eq!(decisions_asked(&gw, "GetRowFilters").await - filters0, 3, "{engine:?}");
        let phones = alice.query(masked).await;
        assert!(strings(&phones, 1).iter().all(|p| p.starts_with("XX-XXX-XXX-")), "{engine:?}");
        answers.push((strings(&by_nation, 0), strings(&phones, 1)));
        gw.shutdown().await;
    }
    // alice (EUROPE) sees the five European nations, identically under both engines.
    assert_eq!(answers[0].0.len(), 5, "{:?}", answers[0].0);
    assert_eq!(answers[0], answers[1]);
}
