//! The `tpch` catalog: the eight TPC-H tables generated in memory with `tpchgen-arrow`.
//!
//! Each table is cut into parts (tpchgen's `part`/`part_count`, which yield exactly the rows
//! an unsplit generator would) and the parts are generated on a small pool of scoped threads,
//! one per core. Each part becomes one partition of the table's [`MemTable`], so scans are
//! parallel too. Column names and types are tpchgen-arrow's: keys `Int64`, money and
//! quantities `Decimal128(15, 2)`, dates `Date32`, strings `Utf8` (cast from tpchgen's `Utf8View`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};

use super::catalog_error;
use crate::config::default_tpch_schema;
use crate::error::EngineError;

/// Rows generated per part, roughly: small enough that scale factor 0.01 still spreads
/// `lineitem` over a few cores, large enough that batches stay full.
const ROWS_PER_PART: f64 = 50_000.0;

/// One TPC-H table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    LineItem,
    Orders,
    PartSupp,
    Part,
    Customer,
    Supplier,
    Nation,
    Region,
}

impl Table {
    /// All eight tables, largest first so the pool starts on the long jobs.
    const ALL: [Table; 8] = [
        Table::LineItem,
        Table::Orders,
        Table::PartSupp,
        Table::Part,
        Table::Customer,
        Table::Supplier,
        Table::Nation,
        Table::Region,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::LineItem => "lineitem",
            Table::Orders => "orders",
            Table::PartSupp => "partsupp",
            Table::Part => "part",
            Table::Customer => "customer",
            Table::Supplier => "supplier",
            Table::Nation => "nation",
            Table::Region => "region",
        }
    }

    fn schema(self) -> SchemaRef {
        plain_string_schema(&self.view_schema())
    }

    /// The schema tpchgen-arrow produces (strings as Utf8View).
    fn view_schema(self) -> SchemaRef {
        match self {
            Table::LineItem => LineItemArrow::schema_ref(),
            Table::Orders => OrderArrow::schema_ref(),
            Table::PartSupp => PartSuppArrow::schema_ref(),
            Table::Part => PartArrow::schema_ref(),
            Table::Customer => CustomerArrow::schema_ref(),
            Table::Supplier => SupplierArrow::schema_ref(),
            Table::Nation => NationArrow::schema_ref(),
            Table::Region => RegionArrow::schema_ref(),
        }
    }

    /// How many parts to cut the table into at `scale_factor`. Nation and region are fixed
    /// tables whose generators ignore the part arguments, so they are always one part.
    fn parts(self, scale_factor: f64, threads: usize) -> i32 {
        let rows_at_sf1 = match self {
            Table::LineItem => 6_000_000.0,
            Table::Orders => 1_500_000.0,
            Table::PartSupp => 800_000.0,
            Table::Part => 200_000.0,
            Table::Customer => 150_000.0,
            Table::Supplier => 10_000.0,
            Table::Nation | Table::Region => return 1,
        };
        let wanted = (rows_at_sf1 * scale_factor / ROWS_PER_PART).ceil();
        let cap = (threads * 4).clamp(1, 4096) as f64;
        if wanted.is_nan() {
            return 1;
        }
        // In 1..=cap, so the cast is exact.
        wanted.clamp(1.0, cap) as i32
    }

    /// Generates part `part` (1-based) of `parts`.
    fn generate(self, scale_factor: f64, part: i32, parts: i32) -> Result<Vec<RecordBatch>, ArrowError> {
        let schema = self.schema();
        self.generate_views(scale_factor, part, parts)?.into_iter().map(|batch| plain_strings(&schema, batch)).collect()
    }

    fn generate_views(self, scale_factor: f64, part: i32, parts: i32) -> Result<Vec<RecordBatch>, ArrowError> {
        let sf = scale_factor;
        match self {
            Table::LineItem => LineItemArrow::new(LineItemGenerator::new(sf, part, parts)).collect(),
            Table::Orders => OrderArrow::new(OrderGenerator::new(sf, part, parts)).collect(),
            Table::PartSupp => PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts)).collect(),
            Table::Part => PartArrow::new(PartGenerator::new(sf, part, parts)).collect(),
            Table::Customer => CustomerArrow::new(CustomerGenerator::new(sf, part, parts)).collect(),
            Table::Supplier => SupplierArrow::new(SupplierGenerator::new(sf, part, parts)).collect(),
            Table::Nation => NationArrow::new(NationGenerator::new(sf, part, parts)).collect(),
            Table::Region => RegionArrow::new(RegionGenerator::new(sf, part, parts)).collect(),
        }
    }
}

/// Strings are served as plain Utf8: every Flight SQL client (JDBC, ODBC, older ADBC) reads it,
/// while Utf8View is still unknown to some.
fn plain_string_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            datafusion::arrow::datatypes::DataType::Utf8View => {
                f.as_ref().clone().with_data_type(datafusion::arrow::datatypes::DataType::Utf8)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn plain_strings(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Each generated table with its partitions (one per part, in part order).
type Generated = Vec<(Table, Vec<Vec<RecordBatch>>)>;

/// One unit of work for the pool: a part of a table.
#[derive(Debug, Clone, Copy)]
struct Job {
    table: Table,
    part: i32,
    parts: i32,
}

/// Builds the catalog `name` holding the TPC-H tables at `scale_factor` in one schema.
pub(super) async fn build(
    name: &str,
    scale_factor: f64,
    schema: Option<&str>,
) -> Result<Arc<dyn CatalogProvider>, EngineError> {
    if !(scale_factor.is_finite() && scale_factor > 0.0) {
        return Err(catalog_error(name, format!("scale factor {scale_factor} must be a positive number")));
    }
    let schema_name = schema.map_or_else(|| default_tpch_schema(scale_factor), str::to_ascii_lowercase);
    let started = std::time::Instant::now();
    let tables = match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(move || generate_all(scale_factor))
            .await
            .map_err(|e| catalog_error(name, format!("TPC-H generation task failed: {e}")))?,
        Err(_) => generate_all(scale_factor),
    }
    .map_err(|reason| catalog_error(name, reason))?;

    let schema_provider = Arc::new(MemorySchemaProvider::new());
    for (table, partitions) in tables {
        let mem = MemTable::try_new(table.schema(), partitions)
            .map_err(|e| catalog_error(name, format!("TPC-H table {}: {e}", table.name())))?;
        schema_provider
            .register_table(table.name().to_string(), Arc::new(mem))
            .map_err(|e| catalog_error(name, format!("TPC-H table {}: {e}", table.name())))?;
    }
    let catalog = MemoryCatalogProvider::new();
    catalog
        .register_schema(&schema_name, schema_provider)
        .map_err(|e| catalog_error(name, format!("schema {schema_name}: {e}")))?;
    tracing::info!(
        catalog = name,
        schema = %schema_name,
        scale_factor,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "generated TPC-H data"
    );
    Ok(Arc::new(catalog))
}

/// Generates every table on one scoped thread per core; returns each table with its
/// partitions (one per part, in part order).
fn generate_all(scale_factor: f64) -> Result<Generated, String> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let jobs: Vec<Job> = Table::ALL
        .iter()
        .flat_map(|&table| {
            let parts = table.parts(scale_factor, threads);
            (1..=parts).map(move |part| Job { table, part, parts })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Vec<RecordBatch>>> = vec![None; jobs.len()];

    // Every worker is joined inside the scope (a panicking one reports an error instead of
    // making `scope` panic); results are sorted into place afterwards.
    let joined: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(jobs.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        done.push((i, job.table.generate(scale_factor, job.part, job.parts)));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join()).collect()
    });
    for done in joined {
        let done = done.map_err(|_| "a TPC-H generator thread panicked".to_string())?;
        for (i, batches) in done {
            let (Some(job), Some(slot)) = (jobs.get(i), results.get_mut(i)) else { continue };
            let batches = batches
                .map_err(|e| format!("generating TPC-H {} part {}/{}: {e}", job.table.name(), job.part, job.parts))?;
            *slot = Some(batches);
        }
    }

    let mut tables: Generated = Vec::with_capacity(Table::ALL.len());
    for (job, batches) in jobs.iter().zip(results) {
        let batches =
            batches.ok_or_else(|| format!("TPC-H {} part {} was not generated", job.table.name(), job.part))?;
        match tables.last_mut() {
            Some((table, partitions)) if *table == job.table => partitions.push(batches),
            _ => tables.push((job.table, vec![batches])),
        }
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::config::CatalogConfig;

    async fn tiny_context() -> SessionContext {
        // Unqualified names resolve in tpch.tiny, as the benchmark queries expect.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_default_catalog_and_schema("tpch", "tiny"));
        let config = CatalogConfig::Tpch { name: "tpch".into(), scale_factor: 0.01, schema: None };
        let catalog = crate::catalogs::build_catalog(&config, &ctx.state()).await.expect("tpch catalog");
        ctx.register_catalog("tpch", catalog);
        ctx
    }

    async fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        ctx.sql(sql).await.expect("plan").collect().await.expect("execute")
    }

    #[tokio::test]
    async fn tpch_tiny_has_eight_tables_and_runs_q6() {
        let ctx = tiny_context().await;
        let catalog = ctx.catalog("tpch").expect("registered");
        assert_eq!(catalog.schema_names(), vec!["tiny".to_string()]);
        let schema = catalog.schema("tiny").expect("tiny schema");
        let mut names = schema.table_names();
        names.sort();
        assert_eq!(names, ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]);

        let count = query(&ctx, "SELECT count(*) FROM tpch.tiny.lineitem").await;
        let rows = count[0].column(0).as_any().downcast_ref::<Int64Array>().expect("count").value(0);
        assert!(rows > 50_000, "lineitem has {rows} rows");
        let nations = query(&ctx, "SELECT count(*) AS n FROM tpch.tiny.nation").await;
        let n = nations[0].column(0).as_any().downcast_ref::<Int64Array>().expect("count").value(0);
        assert_eq!(n, 25);

        let lineitem = schema.table("lineitem").await.expect("lookup").expect("lineitem");
        let fields = lineitem.schema();
        assert_eq!(fields.field_with_name("l_shipdate").expect("col").data_type(), &DataType::Date32);
        assert_eq!(fields.field_with_name("l_extendedprice").expect("col").data_type(), &DataType::Decimal128(15, 2));

        let q6 = query(
            &ctx,
            "SELECT sum(l_extendedprice * l_discount) AS revenue FROM tpch.tiny.lineitem \
             WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' \
             AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
        )
        .await;
        assert_eq!(q6.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        assert!(!q6[0].column(0).is_null(0));
    }

    #[tokio::test]
    async fn tpch_parts_add_up_to_an_unsplit_table() {
        let whole: usize = Table::Orders.generate(0.01, 1, 1).expect("orders").iter().map(|b| b.num_rows()).sum();
        let split: usize = (1..=3)
            .map(|p| Table::Orders.generate(0.01, p, 3).expect("orders").iter().map(|b| b.num_rows()).sum::<usize>())
            .sum();
        assert_eq!(whole, 15_000);
        assert_eq!(split, whole);
        assert_eq!(Table::Nation.parts(100.0, 64), 1);
        assert_eq!(Table::LineItem.parts(f64::NAN, 4), 1);
    }

    #[tokio::test]
    async fn tpch_rejects_bad_scale_factors() {
        for sf in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = build("t", sf, None).await.expect_err("must fail");
            assert!(matches!(err, EngineError::Catalog { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn tpch_benchmark_queries_all_run() {
        let ctx = tiny_context().await;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/tpch-queries/");
        let must_have_rows = [1, 3, 5, 6, 10, 12, 14];
        let mut failures = Vec::new();
        for q in 1..=22 {
            let path = format!("{dir}q{q:02}.sql");
            let sql = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let result = match ctx.sql(&sql).await {
                Ok(df) => df.collect().await,
                Err(e) => Err(e),
            };
            match result {
                Ok(batches) => {
                    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                    if rows == 0 && must_have_rows.contains(&q) {
                        failures.push(format!("q{q:02}: no rows"));
                    }
                }
                Err(e) => failures.push(format!("q{q:02}: {e}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
