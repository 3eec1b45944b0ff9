//! Bad input gets the right status with a message naming what was wrong, and the connection
//! stays usable afterwards.

use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, Ticket};
use prost::Message;

use crate::common::*;

async fn still_serving(raw: &mut arrow_flight::flight_service_client::FlightServiceClient<tonic::transport::Channel>) {
    let batches = raw_query(raw, "SELECT 1 AS ok").await.expect("the connection still serves queries");
    assert_eq!(rows(&batches), 1);
}

#[tokio::test]
async fn sql_errors_are_invalid_argument_and_unknown_names_not_found() {
    let gw = gateway(gateway_config()).await;
    let mut raw = raw(gw.flight_addr).await;
    let cases: [(&str, tonic::Code, &str); 7] = [
        ("SELEC 1", tonic::Code::InvalidArgument, "SELEC"),
        ("SELECT nope()", tonic::Code::InvalidArgument, "nope"),
        ("SELECT * FROM no_such_table", tonic::Code::NotFound, "no_such_table"),
        ("SELECT * FROM nowhere.s.t", tonic::Code::NotFound, "nowhere"),
        ("SELECT 1; SELECT 2", tonic::Code::InvalidArgument, "one statement"),
        ("SELECT CAST('abc' AS INT)", tonic::Code::InvalidArgument, "abc"),
        ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'", tonic::Code::PermissionDenied, "not allowed"),
    ];
    for (sql, code, needle) in cases {
        let err = raw_query(&mut raw, sql).await.expect_err(sql);
        assert_eq!(err.code(), code, "{sql}: {err}");
        assert!(err.message().contains(needle), "{sql}: message should name `{needle}`: {}", err.message());
        still_serving(&mut raw).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn runtime_errors_reach_the_client_as_errors() {
    let gw = gateway(gateway_config()).await;
    let mut raw = raw(gw.flight_addr).await;
    let err = raw_query(&mut raw, "SELECT n_nationkey / (n_nationkey - n_nationkey) FROM nation")
        .await
        .expect_err("division by zero");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().to_lowercase().contains("divide by zero"), "{err}");
    still_serving(&mut raw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn garbage_tampered_and_foreign_tickets_are_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(password_config(dir.path())).await;
    let alice = client_as(gw.flight_addr, "alice", "alice-secret").await;
    let bob = client_as(gw.flight_addr, "bob", "bob-secret").await;
    let mut alice_raw = alice.inner().clone();
    let token = alice.token().expect("token").clone();
    let with_token = |ticket: Ticket, token: &str| {
        let mut r = tonic::Request::new(ticket);
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        r
    };
    let info = alice.clone().execute("SELECT * FROM nation".into(), None).await.expect("info");
    let good = info.endpoint[0].ticket.clone().expect("ticket");

    let any = TicketStatementQuery::decode(arrow_flight::sql::Any::decode(good.ticket.clone()).expect("any").value)
        .expect("ticket statement");
    let mut tampered = any.statement_handle.to_vec();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x20;
    let tampered =
        Ticket { ticket: TicketStatementQuery { statement_handle: tampered.into() }.as_any().encode_to_vec().into() };
    let wrong_type = Ticket { ticket: arrow_flight::sql::CommandGetCatalogs {}.as_any().encode_to_vec().into() };
    for (name, ticket) in [
        ("random bytes", Ticket { ticket: vec![0xde, 0xad, 0xbe, 0xef, 0x01].into() }),
        ("empty", Ticket { ticket: Default::default() }),
        (
            "garbage handle",
            Ticket {
                ticket: TicketStatementQuery { statement_handle: b"x".to_vec().into() }.as_any().encode_to_vec().into(),
            },
        ),
        ("tampered", tampered),
    ] {
        let err = alice_raw.do_get(with_token(ticket, &token)).await.expect_err(name);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err}");
    }
    // A metadata command as a ticket is answered (it carries no privilege).
    assert!(alice_raw.do_get(with_token(wrong_type, &token)).await.is_ok());
    // Bob cannot redeem Alice's ticket.
    let err =
        bob.inner().clone().do_get(with_token(good.clone(), bob.token().expect("token"))).await.expect_err("foreign");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("another user"), "{err}");
    // Alice still can.
    assert!(alice_raw.do_get(with_token(good, &token)).await.is_ok());
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_requests_and_sql_are_refused_before_work() {
    let mut cfg = gateway_config();
    cfg.server.max_request_size = "1MiB".into();
    cfg.server.max_sql_size = "64KiB".into();
    let gw = gateway(cfg).await;
    let mut raw = raw(gw.flight_addr).await;
    let long_sql = format!("SELECT '{}'", "x".repeat(100 * 1024));
    let err = raw_info(&mut raw, &long_sql).await.expect_err("sql over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("max_sql_size"), "{err}");
    let huge = format!("SELECT '{}'", "x".repeat(2 * 1024 * 1024));
    let err = raw_info(&mut raw, &huge).await.expect_err("message over the limit");
    assert!(matches!(err.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{err}");
    still_serving(&mut raw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_commands_and_actions_are_invalid_argument() {
    let gw = gateway(gateway_config()).await;
    let mut raw = raw(gw.flight_addr).await;
    let err =
        raw.get_flight_info(FlightDescriptor::new_cmd(vec![0xff, 0x00, 0x13])).await.expect_err("garbage command");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let unknown =
        arrow_flight::sql::Any { type_url: "type.googleapis.com/nope.Nope".into(), value: Default::default() };
    let err =
        raw.get_flight_info(FlightDescriptor::new_cmd(unknown.encode_to_vec())).await.expect_err("unknown command");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = raw
        .do_action(arrow_flight::Action { r#type: "SetSessionOptions".into(), body: vec![0xff, 0xff, 0xff].into() })
        .await
        .expect_err("malformed action body");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = raw
        .do_action(arrow_flight::Action { r#type: "Explode".into(), body: Default::default() })
        .await
        .expect_err("unknown action");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    still_serving(&mut raw).await;
    gw.shutdown().await;
}
