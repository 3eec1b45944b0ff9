//! The Flight SQL surface real clients use, through the gateway.

use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo,
};
use arrow_flight::{Action, HandshakeRequest};
use datafusion::arrow::array::BinaryArray;
use datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer;
use prost::Message;
use quiver_gateway::flight::session_proto::{
    GetSessionOptionsResult, SessionOptionValue, SetSessionOptionsRequest, SetSessionOptionsResult,
    session_option_value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test]
async fn handshake_returns_a_bearer_token_and_wrong_passwords_are_unauthenticated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(password_config(dir.path())).await;
    let mut raw = raw(gw.flight_addr).await;
    let basic = |user: &str, pw: &str| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
    };
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", basic("alice", "alice-secret").parse().expect("header"));
    let response = raw.handshake(request).await.expect("handshake");
    let auth = response.metadata().get("authorization").expect("authorization header").to_str().expect("ascii");
    assert!(auth.starts_with("Bearer qv1."), "{auth}");

    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", basic("alice", "wrong").parse().expect("header"));
    let err = raw.handshake(request).await.expect_err("wrong password");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // The same message for an unknown user: no user enumeration.
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", basic("mallory", "wrong").parse().expect("header"));
    let unknown = raw.handshake(request).await.expect_err("unknown user");
    assert_eq!(unknown.message(), err.message());

    // Without credentials nothing is served.
    let mut anonymous = crate::common::raw(gw.flight_addr).await;
    let err = raw_info(&mut anonymous, "SELECT 1").await.expect_err("no credentials");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // The token works for queries.
    let mut client = client_as(gw.flight_addr, "bob", "bob-secret").await;
    assert_eq!(rows(&query(&mut client, "SELECT * FROM nation").await), 25);
    gw.shutdown().await;
}

#[tokio::test]
async fn replicas_sharing_a_secret_accept_each_others_tokens_and_tickets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-shared").expect("secret");
    let mut cfg = password_config(dir.path());
    cfg.server.secret_file = Some(secret);
    let a = gateway(cfg.clone()).await;
    let b = gateway(cfg).await;
    let mut on_a = client_as(a.flight_addr, "alice", "alice-secret").await;
    let info = on_a.execute("SELECT n_name FROM nation ORDER BY n_nationkey".into(), None).await.expect("info");
    // Redeem A's ticket on B with A's token.
    let mut on_b = client(b.flight_addr).await;
    on_b.set_token(on_a.token().expect("token").clone());
    let batches = fetch(&mut on_b, info).await;
    assert_eq!(rows(&batches), 25);
    assert_eq!(text(&batches[0], 0, 0), "ALGERIA");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn sql_info_answers_every_id_and_the_ids_clients_index() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    let all = {
        let info = c.get_sql_info(vec![]).await.expect("info");
        fetch(&mut c, info).await
    };
    let known = (0..10_000).filter(|i| SqlInfo::try_from(*i).is_ok()).count();
    assert_eq!(rows(&all), known, "an empty request returns every id");
    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerArrowVersion,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlIdentifierQuoteChar,
        ])
        .await
        .expect("info");
    let batches = fetch(&mut c, info).await;
    assert_eq!(rows(&batches), 4);
    let text = pretty(&batches);
    assert!(text.contains("Quiver"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn catalogs_schemas_and_tables_are_listed_with_and_without_schemas() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    let catalogs = pretty(&{
        let info = c.get_catalogs().await.expect("catalogs");
        fetch(&mut c, info).await
    });
    assert!(catalogs.contains("tpch") && catalogs.contains("memory"), "{catalogs}");

    let cmd = CommandGetDbSchemas { catalog: Some("tpch".into()), db_schema_filter_pattern: None };
    let schemas = pretty(&{
        let info = c.get_db_schemas(cmd).await.expect("schemas");
        fetch(&mut c, info).await
    });
    assert!(schemas.contains("tiny") && !schemas.contains("memory"), "{schemas}");

    let tables_cmd = |include_schema| CommandGetTables {
        catalog: Some("tpch".into()),
        db_schema_filter_pattern: Some("tiny".into()),
        table_name_filter_pattern: Some("line%".into()),
        table_types: vec![],
        include_schema,
    };
    let plain = {
        let info = c.get_tables(tables_cmd(false)).await.expect("tables");
        fetch(&mut c, info).await
    };
    assert_eq!(plain[0].num_columns(), 4);
    assert_eq!(rows(&plain), 1);
    let with_schema = {
        let info = c.get_tables(tables_cmd(true)).await.expect("tables");
        fetch(&mut c, info).await
    };
    assert_eq!(with_schema[0].num_columns(), 5);
    let ipc = with_schema[0].column(4).as_any().downcast_ref::<BinaryArray>().expect("binary table_schema");
    let schema = try_schema_from_ipc_buffer(ipc.value(0)).expect("schema");
    assert_eq!(schema.field(0).name(), "l_orderkey");
    assert_eq!(schema.fields().len(), 16);

    let types = pretty(&{
        let info = c.get_table_types().await.expect("types");
        fetch(&mut c, info).await
    });
    assert!(types.contains("TABLE") && types.contains("VIEW"), "{types}");
    gw.shutdown().await;
}

#[tokio::test]
async fn keys_are_empty_results_and_xdbc_type_info_lists_types() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    let cmd =
        CommandGetPrimaryKeys { catalog: Some("tpch".into()), db_schema: Some("tiny".into()), table: "nation".into() };
    let info = c.get_primary_keys(cmd).await.expect("primary keys are not UNIMPLEMENTED");
    let batches = fetch(&mut c, info.clone()).await;
    assert_eq!(rows(&batches), 0);
    assert_eq!(info.try_decode_schema().expect("schema").fields().len(), 6);
    let info = c
        .get_exported_keys(arrow_flight::sql::CommandGetExportedKeys {
            catalog: None,
            db_schema: None,
            table: "nation".into(),
        })
        .await
        .expect("exported");
    assert_eq!(rows(&fetch(&mut c, info).await), 0);
    let info = c
        .get_imported_keys(arrow_flight::sql::CommandGetImportedKeys {
            catalog: None,
            db_schema: None,
            table: "nation".into(),
        })
        .await
        .expect("imported");
    assert_eq!(rows(&fetch(&mut c, info).await), 0);
    let xref = arrow_flight::sql::CommandGetCrossReference {
        pk_catalog: None,
        pk_db_schema: None,
        pk_table: "nation".into(),
        fk_catalog: None,
        fk_db_schema: None,
        fk_table: "region".into(),
    };
    let info = c.get_cross_reference(xref).await.expect("cross reference");
    assert_eq!(info.clone().try_decode_schema().expect("schema").fields().len(), 13);
    assert_eq!(rows(&fetch(&mut c, info).await), 0);
    let info = c.get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None }).await.expect("xdbc");
    let types = pretty(&fetch(&mut c, info).await);
    assert!(types.contains("BIGINT") && types.contains("VARCHAR") && types.contains("TIMESTAMP"), "{types}");
    gw.shutdown().await;
}

#[tokio::test]
async fn flight_info_schema_equals_do_get_schema_and_endpoints_have_no_location() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    for sql in [
        "SELECT l_orderkey, l_extendedprice, l_shipdate, l_comment FROM lineitem LIMIT 5",
        "SELECT sum(l_extendedprice) AS s, avg(l_discount) AS a FROM lineitem",
        "SELECT * FROM nation WHERE false",
        "SELECT 1 AS one, NULL AS nothing, 'x' AS s",
    ] {
        let info = c.execute(sql.into(), None).await.expect(sql);
        let announced = info.clone().try_decode_schema().expect("schema");
        assert!(info.endpoint.iter().all(|e| e.location.is_empty()), "{sql}: endpoints carry no location");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let mut stream = c.do_get(ticket).await.expect("do_get");
        while let Some(batch) = futures::TryStreamExt::try_next(&mut stream).await.expect("batch") {
            assert_eq!(batch.schema().as_ref(), &announced, "{sql}");
        }
        assert_eq!(stream.schema().map(|s| s.as_ref()), Some(&announced), "{sql}: stream schema");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn updates_and_ddl_run_and_report_counts() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    c.execute_update("CREATE TABLE memory.default.events (id BIGINT, name VARCHAR)".into(), None)
        .await
        .expect("create");
    let n = c
        .execute_update("INSERT INTO memory.default.events VALUES (1, 'a'), (2, 'b'), (3, 'c')".into(), None)
        .await
        .expect("insert");
    assert_eq!(n, 3);
    let batches = query(&mut c, "SELECT count(*) AS n FROM memory.default.events").await;
    assert!(pretty(&batches).contains("| 3 "), "{}", pretty(&batches));
    // The new table shows up in metadata at once (DDL refreshes the pool's catalog view).
    let cmd = CommandGetTables {
        catalog: Some("memory".into()),
        db_schema_filter_pattern: None,
        table_name_filter_pattern: None,
        table_types: vec![],
        include_schema: false,
    };
    let tables = pretty(&{
        let info = c.get_tables(cmd).await.expect("tables");
        fetch(&mut c, info).await
    });
    assert!(tables.contains("events"), "{tables}");
    gw.shutdown().await;
}

fn string_option(v: &str) -> SessionOptionValue {
    SessionOptionValue { option_value: Some(session_option_value::OptionValue::StringValue(v.into())) }
}

#[tokio::test]
async fn session_options_set_the_default_catalog_and_schema_per_session() {
    let gw = gateway(gateway_config()).await;
    let mut c = client_as(gw.flight_addr, "carol", "").await;
    c.execute_update("CREATE TABLE memory.default.mine AS VALUES (1), (2)".into(), None).await.expect("create");
    let mut set = SetSessionOptionsRequest::default();
    set.session_options.insert("catalog".into(), string_option("memory"));
    set.session_options.insert("schema".into(), string_option("default"));
    set.session_options.insert("no_such_option".into(), string_option("x"));
    let result = c
        .do_action(Action { r#type: "SetSessionOptions".into(), body: set.encode_to_vec().into() })
        .await
        .expect("set");
    let results: Vec<_> = futures::TryStreamExt::try_collect(result).await.expect("results");
    let result = SetSessionOptionsResult::decode(results[0].body.clone()).expect("decode");
    assert_eq!(result.errors.keys().collect::<Vec<_>>(), vec!["no_such_option"]);

    assert_eq!(rows(&query(&mut c, "SELECT * FROM mine").await), 2, "unqualified names use the session's schema");
    let got = c.do_action(Action { r#type: "GetSessionOptions".into(), body: Default::default() }).await.expect("get");
    let got: Vec<_> = futures::TryStreamExt::try_collect(got).await.expect("results");
    let got = GetSessionOptionsResult::decode(got[0].body.clone()).expect("decode");
    assert_eq!(got.session_options.get("catalog"), Some(&string_option("memory")));

    // Another connection of the same user has its own session: defaults apply there.
    let mut other = client_as(gw.flight_addr, "carol", "").await;
    assert_eq!(rows(&query(&mut other, "SELECT * FROM nation").await), 25);

    // An unknown catalog is refused as an invalid value.
    let mut bad = SetSessionOptionsRequest::default();
    bad.session_options.insert("catalog".into(), string_option("nope"));
    let r = c
        .do_action(Action { r#type: "SetSessionOptions".into(), body: bad.encode_to_vec().into() })
        .await
        .expect("set");
    let r: Vec<_> = futures::TryStreamExt::try_collect(r).await.expect("results");
    assert!(SetSessionOptionsResult::decode(r[0].body.clone()).expect("decode").errors.contains_key("catalog"));

    let closed = c.do_action(Action { r#type: "CloseSession".into(), body: Default::default() }).await.expect("close");
    let _: Vec<_> = futures::TryStreamExt::try_collect(closed).await.expect("results");
    assert_eq!(rows(&query(&mut c, "SELECT * FROM nation").await), 25, "after CloseSession the defaults apply again");
    gw.shutdown().await;
}

#[tokio::test]
async fn cancel_flight_info_stops_a_query_before_and_during_do_get() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    let mut raw = raw(gw.flight_addr).await;
    let cancel = |info: arrow_flight::FlightInfo| Action {
        r#type: "CancelFlightInfo".into(),
        body: arrow_flight::CancelFlightInfoRequest { info: Some(info) }.encode_to_vec().into(),
    };
    // Before DoGet.
    let info = c.execute("SELECT * FROM lineitem".into(), None).await.expect("info");
    let result = raw.do_action(cancel(info.clone())).await.expect("cancel").into_inner();
    let result: Vec<_> = futures::TryStreamExt::try_collect(result).await.expect("results");
    let status = arrow_flight::CancelFlightInfoResult::decode(result[0].body.clone()).expect("decode").status;
    assert_eq!(status, arrow_flight::CancelStatus::Cancelled as i32);
    let err = raw.do_get(info.endpoint[0].ticket.clone().expect("ticket")).await.expect_err("cancelled");
    assert_eq!(err.code(), tonic::Code::Cancelled);

    // During DoGet: a long stream ends with CANCELLED, never with a clean end.
    let info = c.execute("SELECT value FROM range(200000000)".into(), None).await.expect("info");
    let mut stream = raw.do_get(info.endpoint[0].ticket.clone().expect("ticket")).await.expect("do_get").into_inner();
    stream.message().await.expect("first frame").expect("some data");
    let _ = raw.do_action(cancel(info)).await.expect("cancel");
    let outcome = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => break None,
            Err(status) => break Some(status.code()),
        }
    };
    assert_eq!(outcome, Some(tonic::Code::Cancelled));
    gw.shutdown().await;
}

#[tokio::test]
async fn http_health_and_info_answer() {
    let gw = gateway(gateway_config()).await;
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(gw.http_addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    let health = get("/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let info = get("/v1/info").await;
    assert!(info.starts_with("HTTP/1.1 200") && info.contains("\"version\"") && info.contains("tpch"), "{info}");
    gw.shutdown().await;
}
