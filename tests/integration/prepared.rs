//! Prepared statements: the path the JDBC driver and ADBC take for every statement.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::common::*;

fn params(values: Vec<(&str, Arc<dyn datafusion::arrow::array::Array>)>) -> RecordBatch {
    RecordBatch::try_from_iter(values.into_iter().map(|(n, a)| (n.to_string(), a))).expect("batch")
}

#[tokio::test]
async fn prepared_query_binds_parameters_and_announces_schemas() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    let mut stmt = c.prepare("SELECT n_name FROM nation WHERE n_nationkey = ?".into(), None).await.expect("prepare");
    let param_schema = stmt.parameter_schema().expect("parameter schema").clone();
    assert_eq!(param_schema.fields().len(), 1);
    assert_eq!(param_schema.field(0).data_type(), &DataType::Int64);
    let dataset = stmt.dataset_schema().expect("dataset schema").clone();
    assert_eq!(dataset.field(0).name(), "n_name");

    for (key, name) in [(7, "GERMANY"), (0, "ALGERIA")] {
        stmt.set_parameters(params(vec![("$1", Arc::new(Int64Array::from(vec![key])))])).expect("bind");
        let info = stmt.execute().await.expect("execute");
        let batches = fetch(&mut c, info).await;
        assert_eq!(rows(&batches), 1);
        assert_eq!(text(&batches[0], 0, 0), name);
        assert_eq!(batches[0].schema().as_ref(), &dataset);
    }
    stmt.close().await.expect("close succeeds");
    gw.shutdown().await;
}

#[tokio::test]
async fn prepared_updates_report_counts_and_have_an_empty_dataset_schema() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    c.execute_update("CREATE TABLE memory.default.p (a BIGINT, b VARCHAR)".into(), None).await.expect("create");
    let mut stmt = c.prepare("INSERT INTO memory.default.p VALUES (?, ?)".into(), None).await.expect("prepare");
    assert_eq!(stmt.dataset_schema().expect("schema"), &Schema::empty(), "an update has no result set");
    for (a, b) in [(1, "x"), (2, "y")] {
        stmt.set_parameters(params(vec![
            ("$1", Arc::new(Int64Array::from(vec![a]))),
            ("$2", Arc::new(StringArray::from(vec![b]))),
        ]))
        .expect("bind");
        assert_eq!(stmt.execute_update().await.expect("update"), 1);
    }
    let batches = query(&mut c, "SELECT a, b FROM memory.default.p ORDER BY a").await;
    assert_eq!(rows(&batches), 2);
    assert_eq!(text(&batches[0], 1, 1), "y");
    gw.shutdown().await;
}

#[tokio::test]
async fn wrong_missing_and_extra_parameters_are_invalid_argument() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    let mut stmt = c.prepare("SELECT n_name FROM nation WHERE n_nationkey = ?".into(), None).await.expect("prepare");
    let err = stmt.execute().await.expect_err("no parameters bound");
    assert!(err.to_string().contains("none were bound"), "{err}");
    stmt.set_parameters(params(vec![
        ("$1", Arc::new(Int64Array::from(vec![1]))),
        ("$2", Arc::new(Int64Array::from(vec![2]))),
    ]))
    .expect("bind");
    let err = stmt.execute().await.expect_err("too many parameters");
    assert!(err.to_string().contains("1 parameter(s) but 2"), "{err}");
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["seven"]))],
    )
    .expect("batch");
    stmt.set_parameters(wrong).expect("bind");
    let err = stmt.execute().await.expect_err("wrong type");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("invalid argument") && text.contains("seven"), "{err}");
    // The connection still works.
    assert_eq!(rows(&query(&mut c, "SELECT 1").await), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_prepared_handle_works_on_another_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "another-shared-secret-of-32-bytes-or-more").expect("secret");
    let mut cfg = gateway_config();
    cfg.server.secret_file = Some(secret);
    let a = gateway(cfg.clone()).await;
    let b = gateway(cfg).await;
    let mut on_a = client_as(a.flight_addr, "dana", "").await;
    let mut stmt =
        on_a.prepare("SELECT r_name FROM region WHERE r_regionkey = $1".into(), None).await.expect("prepare");
    stmt.set_parameters(params(vec![("$1", Arc::new(Int64Array::from(vec![3])))])).expect("bind");
    let info = stmt.execute().await.expect("execute on A");
    let mut on_b = client(b.flight_addr).await;
    on_b.set_token(on_a.token().expect("token").clone());
    let batches = fetch(&mut on_b, info).await;
    assert_eq!(text(&batches[0], 0, 0), "EUROPE");
    a.shutdown().await;
    b.shutdown().await;
}
