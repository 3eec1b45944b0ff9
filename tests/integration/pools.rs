//! Pools: routing by catalog to remote workers, merged metadata, clear errors.

use quiver_engine::config::{CatalogConfig, EngineConfig};

use crate::common::*;

#[tokio::test]
async fn statements_go_to_the_pool_that_serves_their_catalogs() {
    let lake_cfg = EngineConfig {
        catalogs: vec![CatalogConfig::Memory { name: "lake".into(), schemas: vec!["default".into()] }],
        ..Default::default()
    };
    let (lake_addr, stop) = worker(lake_cfg).await;
    let mut cfg = gateway_config();
    cfg.pools.push(remote_pool("lake", &[lake_addr]));
    let gw = gateway(cfg).await;
    let mut c = client(gw.flight_addr).await;

    c.execute_update("CREATE TABLE lake.default.t AS VALUES (1), (2), (3)".into(), None).await.expect("create on lake");
    assert_eq!(rows(&query(&mut c, "SELECT * FROM lake.default.t").await), 3);
    // The table lives on the remote worker: it answers directly.
    let mut direct = client(lake_addr).await;
    assert_eq!(rows(&query(&mut direct, "SELECT * FROM lake.default.t").await), 3);
    // tpch still goes to the embedded pool.
    assert_eq!(rows(&query(&mut c, "SELECT * FROM tpch.tiny.nation").await), 25);

    // Metadata merges every pool.
    let catalogs = pretty(&{
        let info = c.get_catalogs().await.expect("catalogs");
        fetch(&mut c, info).await
    });
    for name in ["tpch", "memory", "lake"] {
        assert!(catalogs.contains(name), "{name} missing from {catalogs}");
    }

    let mut raw = raw(gw.flight_addr).await;
    let err =
        raw_query(&mut raw, "SELECT * FROM lake.default.t JOIN tpch.tiny.nation ON true").await.expect_err("two pools");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("no single pool"), "{err}");
    let err = raw_query(&mut raw, "SELECT * FROM nope.a.b").await.expect_err("unknown catalog");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("`nope`"), "{err}");
    let _ = stop.send(());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_dead_worker_is_unavailable_naming_it() {
    let (addr, stop) = worker(EngineConfig {
        catalogs: vec![CatalogConfig::Memory { name: "far".into(), schemas: vec!["default".into()] }],
        ..Default::default()
    })
    .await;
    let mut cfg = gateway_config();
    cfg.server.metadata_ttl_secs = 0;
    cfg.pools.push(remote_pool("far", &[addr]));
    let gw = gateway(cfg).await;
    let mut raw = raw(gw.flight_addr).await;
    assert!(raw_query(&mut raw, "SELECT 1 FROM far.information_schema.tables LIMIT 1").await.is_ok());
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let err = raw_query(&mut raw, "SELECT * FROM far.default.x").await.expect_err("worker gone");
    assert!(matches!(err.code(), tonic::Code::Unavailable | tonic::Code::NotFound), "{err}");
    // The embedded pool keeps serving, and metadata still answers from the live pool.
    assert_eq!(rows(&raw_query(&mut raw, "SELECT * FROM tpch.tiny.region").await.expect("tpch")), 5);
    gw.shutdown().await;
}
