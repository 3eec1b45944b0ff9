//! The engine worker on its own: Flight SQL served directly, EXPLAIN, spilling, file catalogs.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::parquet::arrow::ArrowWriter;
use quiver_engine::config::{CatalogConfig, EngineConfig};

use crate::common::*;

#[tokio::test]
async fn a_standalone_worker_serves_flight_sql() {
    let (addr, stop) = worker(engine_config()).await;
    let mut c = client(addr).await;
    assert_eq!(rows(&query(&mut c, "SELECT * FROM tpch.tiny.region").await), 5);
    // Its first catalog and schema are the defaults.
    assert_eq!(rows(&query(&mut c, "SELECT * FROM nation").await), 25);
    let catalogs = pretty(&{
        let info = c.get_catalogs().await.expect("catalogs");
        fetch(&mut c, info).await
    });
    assert!(catalogs.contains("tpch") && catalogs.contains("memory"), "{catalogs}");
    let _ = stop.send(());
}

#[tokio::test]
async fn explain_and_explain_analyze_work_through_the_gateway() {
    let gw = gateway(gateway_config()).await;
    let mut c = client(gw.flight_addr).await;
    let plan = pretty(&query(&mut c, "EXPLAIN SELECT count(*) FROM lineitem WHERE l_quantity > 10").await);
    assert!(plan.contains("physical_plan") && plan.contains("logical_plan"), "{plan}");
    let analyzed = pretty(&query(&mut c, "EXPLAIN ANALYZE SELECT count(*) FROM lineitem WHERE l_quantity > 10").await);
    assert!(analyzed.contains("output_rows"), "{analyzed}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_sort_over_the_memory_limit_spills_to_disk() {
    let spill = tempfile::tempdir().expect("tempdir");
    let mut cfg = engine_config();
    cfg.memory_limit = Some("24MiB".into());
    cfg.spill_dir = Some(spill.path().to_path_buf());
    cfg.target_partitions = Some(1);
    let (addr, stop) = worker(cfg).await;
    let mut c = client(addr).await;
    // About 60 MB of rows to sort under a 24 MiB limit.
    let sql = "SELECT value, md5(CAST(value AS VARCHAR)) AS h FROM range(800000) ORDER BY h";
    let sorted = query(&mut c, sql).await;
    assert_eq!(rows(&sorted), 800_000, "every row comes back");
    let analyzed = pretty(&query(&mut c, &format!("EXPLAIN ANALYZE {sql}")).await);
    let spilled = analyzed
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .any(|n| n > 0);
    assert!(spilled, "the sort should spill under a 24MiB limit:\n{analyzed}");
    let _ = stop.send(());
}

#[tokio::test]
async fn a_files_catalog_is_served_through_the_gateway() {
    let lake = tempfile::tempdir().expect("tempdir");
    let sales = lake.path().join("sales");
    std::fs::create_dir_all(sales.join("orders/year=2023")).expect("dirs");
    std::fs::create_dir_all(sales.join("orders/year=2024")).expect("dirs");
    std::fs::write(sales.join("customers.csv"), "id,name\n1,ada\n2,grace\n").expect("csv");
    for (year, ids) in [("2023", vec![1, 2]), ("2024", vec![3, 4, 5])] {
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids.clone())) as _),
            ("item", Arc::new(StringArray::from(ids.iter().map(|i| format!("item{i}")).collect::<Vec<_>>())) as _),
        ])
        .expect("batch");
        let file = std::fs::File::create(sales.join(format!("orders/year={year}/part-0.parquet"))).expect("file");
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }
    let mut cfg = gateway_config();
    cfg.engine = EngineConfig {
        target_partitions: Some(2),
        catalogs: vec![
            CatalogConfig::Tpch { name: "tpch".into(), scale_factor: 0.01, schema: None },
            CatalogConfig::Files { name: "lake".into(), path: lake.path().to_path_buf() },
        ],
        ..Default::default()
    };
    let gw = gateway(cfg).await;
    let mut c = client(gw.flight_addr).await;
    assert_eq!(rows(&query(&mut c, "SELECT * FROM lake.sales.customers").await), 2);
    assert_eq!(rows(&query(&mut c, "SELECT * FROM lake.sales.orders").await), 5);
    assert_eq!(rows(&query(&mut c, "SELECT * FROM lake.sales.orders WHERE year = '2024'").await), 3);
    gw.shutdown().await;
}
