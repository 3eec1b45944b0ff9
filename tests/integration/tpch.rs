//! Correctness: all 22 TPC-H queries return the same results through the gateway as on the
//! worker directly.

use crate::common::*;

pub fn queries() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tpch-queries");
    (1..=22)
        .map(|i| {
            let name = format!("q{i:02}");
            let sql =
                std::fs::read_to_string(dir.join(format!("{name}.sql"))).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, sql)
        })
        .collect()
}

#[tokio::test]
async fn all_22_tpch_queries_match_the_worker_directly() {
    let gw = gateway(gateway_config()).await;
    let mut through_gateway = client(gw.flight_addr).await;
    let mut direct = client(gw.engine_addr.expect("embedded engine")).await;
    direct.set_header(quiver_engine::CATALOG_HEADER, "tpch");
    direct.set_header(quiver_engine::SCHEMA_HEADER, "tiny");
    let mut non_empty = 0;
    for (name, sql) in queries() {
        let via = query(&mut through_gateway, &sql).await;
        let expected = query(&mut direct, &sql).await;
        assert_eq!(pretty(&via), pretty(&expected), "{name} differs through the gateway");
        if rows(&via) > 0 {
            non_empty += 1;
        }
    }
    // At scale factor 0.01 nearly every query has rows; a broken gateway returning nothing
    // on both sides must not pass.
    assert!(non_empty >= 18, "only {non_empty} of 22 queries returned rows");
    gw.shutdown().await;
}
