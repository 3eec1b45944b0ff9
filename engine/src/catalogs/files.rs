//! The `files` catalog: a directory whose subfolders are schemas and whose files and folders
//! inside those are tables, read through DataFusion's [`ListingTable`].
//!
//! ```text
//! root/
//!   sales/                    schema `sales`
//!     customers.csv           table `customers` (CSV with a header)
//!     orders.parquet          table `orders`
//!     events/                 table `events`, format from the files inside
//!       year=2023/part-0.parquet
//!       year=2024/part-0.parquet   -> partition column `year` (Utf8), pruned on filters
//! ```
//!
//! Names starting with `.` or `_` are skipped at every level (inside table folders through a
//! listing glob). Files with other extensions are ignored, as are folders holding no data file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::session_state::SessionState;

use super::catalog_error;
use crate::error::EngineError;

/// Listing glob that keeps hidden (`.`) and metadata (`_`) files out of folder tables.
const VISIBLE_FILES: &str = "[!._]*";
/// How deep a table folder may nest (guards against symlink loops).
const MAX_DEPTH: usize = 64;

/// A data file format recognised by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Format {
    Parquet,
    Csv,
    Json,
}

impl Format {
    /// The format of a file called `file_name`, and its extension as written (with the dot).
    fn of(file_name: &str) -> Option<(Format, String)> {
        let (_, ext) = file_name.rsplit_once('.')?;
        let format = match ext.to_ascii_lowercase().as_str() {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv,
            "json" | "ndjson" | "jsonl" => Format::Json,
            _ => return None,
        };
        Some((format, format!(".{ext}")))
    }

    /// The DataFusion format, starting from the session's table option defaults.
    fn file_format(self, state: &SessionState) -> Arc<dyn FileFormat> {
        let options = state.default_table_options();
        match self {
            Format::Parquet => Arc::new(ParquetFormat::default().with_options(options.parquet)),
            Format::Csv => Arc::new(CsvFormat::default().with_options(options.csv).with_has_header(true)),
            Format::Json => Arc::new(JsonFormat::default().with_options(options.json).with_newline_delimited(true)),
        }
    }
}

/// What a table is read from.
#[derive(Debug)]
struct TableSource {
    path: PathBuf,
    is_dir: bool,
    format: Format,
    /// Extension filter for listing (empty for single files).
    extension: String,
    /// Hive partition column names, outermost first.
    partition_cols: Vec<String>,
}

/// Builds the catalog `name` over the directory `root`.
pub(super) async fn build(
    name: &str,
    root: &Path,
    state: &SessionState,
) -> Result<Arc<dyn CatalogProvider>, EngineError> {
    let err = |path: &Path, reason: String| catalog_error(name, format!("{}: {reason}", path.display()));
    let root = std::fs::canonicalize(root).map_err(|e| err(root, e.to_string()))?;
    if !root.is_dir() {
        return Err(err(&root, "not a directory".into()));
    }
    let catalog = MemoryCatalogProvider::new();
    for (dir_name, schema_dir) in visible_entries(&root).map_err(|e| err(&root, e))?.dirs {
        let schema_name = dir_name.to_lowercase();
        if catalog.schema(&schema_name).is_some() {
            return Err(err(&schema_dir, format!("schema `{schema_name}` is defined twice (names are lowercased)")));
        }
        let schema = MemorySchemaProvider::new();
        for (table_name, source) in tables_in(&schema_dir).map_err(|(path, e)| err(&path, e))? {
            let table = listing_table(&source, state).await.map_err(|e| err(&source.path, e))?;
            schema.register_table(table_name, table).map_err(|e| err(&source.path, e.to_string()))?;
        }
        catalog.register_schema(&schema_name, Arc::new(schema)).map_err(|e| err(&schema_dir, e.to_string()))?;
    }
    Ok(Arc::new(catalog))
}

/// The visible entries of a directory by name, sorted.
#[derive(Debug, Default)]
struct Entries {
    dirs: BTreeMap<String, PathBuf>,
    files: BTreeMap<String, PathBuf>,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

fn visible_entries(dir: &Path) -> Result<Entries, String> {
    let mut entries = Entries::default();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if is_hidden(&file_name) {
            continue;
        }
        // `metadata` follows symlinks, so linked files and folders count as what they point to.
        let is_dir = std::fs::metadata(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?.is_dir();
        let map = if is_dir { &mut entries.dirs } else { &mut entries.files };
        map.insert(file_name, entry.path());
    }
    Ok(entries)
}

/// The tables of one schema folder, by lowercased name.
fn tables_in(schema_dir: &Path) -> Result<BTreeMap<String, TableSource>, (PathBuf, String)> {
    let entries = visible_entries(schema_dir).map_err(|e| (schema_dir.to_path_buf(), e))?;
    let mut tables = BTreeMap::new();
    for (file_name, path) in entries.files {
        let Some((format, _)) = Format::of(&file_name) else {
            tracing::debug!(path = %path.display(), "ignoring a file that is not Parquet, CSV or NDJSON");
            continue;
        };
        let stem = file_name.rsplit_once('.').map_or(file_name.as_str(), |(stem, _)| stem);
        let source = TableSource { path, is_dir: false, format, extension: String::new(), partition_cols: vec![] };
        add_table(&mut tables, stem.to_lowercase(), source)?;
    }
    for (dir_name, path) in entries.dirs {
        match folder_source(&path).map_err(|e| (path.clone(), e))? {
            Some(source) => add_table(&mut tables, dir_name.to_lowercase(), source)?,
            None => tracing::warn!(path = %path.display(), "skipping a folder without data files"),
        }
    }
    Ok(tables)
}

fn add_table(
    tables: &mut BTreeMap<String, TableSource>,
    name: String,
    source: TableSource,
) -> Result<(), (PathBuf, String)> {
    if let Some(existing) = tables.get(&name) {
        let reason = format!("table `{name}` is also defined by {}", existing.path.display());
        return Err((source.path, reason));
    }
    tables.insert(name, source);
    Ok(())
}

/// Works out a folder table: the one format of its files, their extension and the Hive
/// partition columns. `None` when the folder holds no data file at all.
fn folder_source(dir: &Path) -> Result<Option<TableSource>, String> {
    let mut found = BTreeSet::new();
    collect_formats(dir, 0, &mut found)?;
    let Some(&(format, _)) = found.first() else {
        return Ok(None);
    };
    let exts: Vec<&str> = found.iter().map(|(_, e)| e.as_str()).collect();
    if found.iter().any(|(f, _)| *f != format) {
        return Err(format!("a folder table must hold files of one format, found {}", exts.join(", ")));
    }
    let extension = match exts.as_slice() {
        [one] => one.to_string(),
        // `.json` mixed with `.ndjson`: both names end in `json`.
        _ if exts.iter().all(|e| [".json", ".ndjson"].contains(e)) => "json".to_string(),
        _ => {
            return Err(format!("a folder table must use one file extension, found {}", exts.join(", ")));
        }
    };
    Ok(Some(TableSource {
        path: dir.to_path_buf(),
        is_dir: true,
        format,
        extension,
        partition_cols: partition_columns(dir)?,
    }))
}

/// Adds the format and extension of every visible data file below `dir` to `found`.
fn collect_formats(dir: &Path, depth: usize, found: &mut BTreeSet<(Format, String)>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("folders nest deeper than {MAX_DEPTH} levels (a symlink loop?)"));
    }
    let entries = visible_entries(dir)?;
    found.extend(entries.files.keys().filter_map(|name| Format::of(name)));
    for sub in entries.dirs.values() {
        collect_formats(sub, depth + 1, found)?;
    }
    Ok(())
}

/// The Hive partition keys along the first `key=value` path below `dir`.
fn partition_columns(dir: &Path) -> Result<Vec<String>, String> {
    let mut columns = Vec::new();
    let mut current = dir.to_path_buf();
    loop {
        let entries = visible_entries(&current)?;
        let Some((key, next)) = entries
            .dirs
            .iter()
            .find_map(|(name, path)| name.split_once('=').map(|(key, _)| (key.to_string(), path.clone())))
        else {
            return Ok(columns);
        };
        if key.is_empty() || columns.contains(&key) || columns.len() > MAX_DEPTH {
            return Err(format!("bad partition folder `{key}=` below {}", dir.display()));
        }
        columns.push(key);
        current = next;
    }
}

/// The listing table for `source`, with its schema inferred from the files.
async fn listing_table(source: &TableSource, state: &SessionState) -> Result<Arc<ListingTable>, String> {
    let url = if source.is_dir {
        let url =
            url::Url::from_directory_path(&source.path).map_err(|()| "cannot be turned into a file URL".to_string())?;
        let glob = glob::Pattern::new(VISIBLE_FILES).map_err(|e| e.to_string())?;
        ListingTableUrl::try_new(url, Some(glob))
    } else {
        let url =
            url::Url::from_file_path(&source.path).map_err(|()| "cannot be turned into a file URL".to_string())?;
        ListingTableUrl::try_new(url, None)
    }
    .map_err(|e| e.to_string())?;
    let partition_cols = source.partition_cols.iter().map(|c| (c.clone(), DataType::Utf8)).collect();
    let options = ListingOptions::new(source.format.file_format(state))
        .with_file_extension(source.extension.clone())
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .infer_schema(state)
        .await
        .map_err(|e| format!("cannot infer the schema: {e}"))?;
    ListingTable::try_new(config).map(Arc::new).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::config::CatalogConfig;

    fn write_parquet(path: &Path, ids: &[i64], names: &[&str]) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> =
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names.to_vec()))];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        let mut writer = ArrowWriter::try_new(fs::File::create(path).expect("create"), schema, None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }

    async fn files_context(root: &Path) -> Result<SessionContext, EngineError> {
        let ctx = SessionContext::new();
        let config = CatalogConfig::Files { name: "lake".into(), path: root.to_path_buf() };
        let catalog = crate::catalogs::build_catalog(&config, &ctx.state()).await?;
        ctx.register_catalog("lake", catalog);
        Ok(ctx)
    }

    async fn scalar_i64(ctx: &SessionContext, sql: &str) -> i64 {
        let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        batches[0].column(0).as_any().downcast_ref::<Int64Array>().expect("i64").value(0)
    }

    async fn text(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        pretty_format_batches(&batches).expect("format").to_string()
    }

    #[tokio::test]
    async fn files_catalog_reads_each_format_and_prunes_partitions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sales = dir.path().join("Sales");
        write_parquet(&sales.join("Orders.parquet"), &[1, 2, 3], &["a", "b", "c"]);
        fs::write(sales.join("customers.csv"), "id,city\n1,Paris\n2,Oslo\n").expect("csv");
        fs::write(
            sales.join("clicks.ndjson"),
            "{\"id\":1,\"tag\":\"x\"}\n{\"id\":2,\"tag\":\"y\"}\n{\"id\":7,\"tag\":\"z\"}\n",
        )
        .expect("ndjson");
        let events = sales.join("events");
        write_parquet(&events.join("year=2023/part-0.parquet"), &[1, 2], &["old", "old"]);
        write_parquet(&events.join("year=2024/part-0.parquet"), &[3, 4, 5], &["new", "new", "new"]);
        // Noise that must be skipped: hidden files (even inside a table folder), other
        // extensions, files at the root, hidden schemas.
        fs::write(events.join("year=2024/_broken.parquet"), "not parquet").expect("noise");
        fs::write(events.join("year=2024/.broken.parquet"), "not parquet").expect("noise");
        fs::write(sales.join("README.md"), "# docs").expect("noise");
        fs::write(sales.join(".hidden.csv"), "x\n1\n").expect("noise");
        fs::write(dir.path().join("top.csv"), "x\n1\n").expect("noise");
        fs::create_dir_all(dir.path().join("_staging")).expect("noise");
        fs::create_dir_all(sales.join("empty")).expect("noise");

        let ctx = files_context(dir.path()).await.expect("files catalog");
        let catalog = ctx.catalog("lake").expect("registered");
        assert_eq!(catalog.schema_names(), vec!["sales".to_string()]);
        let mut tables = catalog.schema("sales").expect("schema").table_names();
        tables.sort();
        assert_eq!(tables, ["clicks", "customers", "events", "orders"]);

        assert_eq!(scalar_i64(&ctx, "SELECT sum(id) FROM lake.sales.orders").await, 6);
        assert_eq!(scalar_i64(&ctx, "SELECT count(*) FROM lake.sales.customers WHERE city = 'Oslo'").await, 1);
        assert_eq!(scalar_i64(&ctx, "SELECT sum(id) FROM lake.sales.clicks WHERE tag <> 'x'").await, 9);
        assert_eq!(scalar_i64(&ctx, "SELECT count(*) FROM lake.sales.events").await, 5);
        assert_eq!(scalar_i64(&ctx, "SELECT sum(id) FROM lake.sales.events WHERE year = '2024'").await, 12);
        let by_year = text(&ctx, "SELECT year, count(*) AS n FROM lake.sales.events GROUP BY year ORDER BY year").await;
        assert!(by_year.contains("| 2023 | 2 |") && by_year.contains("| 2024 | 3 |"), "{by_year}");

        let plan = text(&ctx, "EXPLAIN SELECT id, name FROM lake.sales.events WHERE year = '2024'").await;
        assert!(plan.contains("year=2024"), "the 2024 file is scanned:\n{plan}");
        assert!(!plan.contains("year=2023"), "the 2023 partition is pruned:\n{plan}");
    }

    #[tokio::test]
    async fn files_catalog_errors_name_the_catalog_and_path() {
        let missing = files_context(Path::new("/definitely/not/here")).await.err().expect("must fail");
        assert!(matches!(missing, EngineError::Catalog { ref catalog, .. } if catalog == "lake"), "{missing}");
        assert!(missing.to_string().contains("/definitely/not/here"), "{missing}");

        let dir = tempfile::tempdir().expect("tempdir");
        let mixed = dir.path().join("s/mixed");
        write_parquet(&mixed.join("a.parquet"), &[1], &["a"]);
        fs::write(mixed.join("b.csv"), "id\n1\n").expect("csv");
        let err = files_context(dir.path()).await.err().expect("must fail");
        let message = err.to_string();
        assert!(message.contains("catalog `lake`") && message.contains("mixed"), "{message}");

        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("s")).expect("mkdir");
        fs::write(dir.path().join("s/t.csv"), "id\n1\n").expect("csv");
        fs::write(dir.path().join("s/T.ndjson"), "{\"id\":1}\n").expect("json");
        let err = files_context(dir.path()).await.err().expect("must fail");
        assert!(err.to_string().contains("table `t` is also defined"), "{err}");
    }
}
