//! Catalog listings for GetCatalogs / GetDbSchemas / GetTables / GetTableTypes.

use arrow_flight::sql::{CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables};
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::TableType;

use crate::Engine;
use crate::error::EngineError;

fn arrow_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("building metadata: {e}"))
}

/// The Flight SQL name of a DataFusion table type.
pub fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// Every table type a worker can report.
pub const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

pub fn catalogs(engine: &Engine, cmd: CommandGetCatalogs) -> Result<RecordBatch, EngineError> {
    let mut builder = cmd.into_builder();
    for name in engine.catalog_names() {
        builder.append(name);
    }
    builder.build().map_err(arrow_err)
}

pub fn schemas(engine: &Engine, cmd: CommandGetDbSchemas) -> Result<RecordBatch, EngineError> {
    let mut builder = cmd.into_builder();
    let list = engine.base().catalog_list();
    for catalog in engine.catalog_names() {
        if let Some(provider) = list.catalog(&catalog) {
            for schema in provider.schema_names() {
                builder.append(&catalog, schema);
            }
        }
    }
    builder.build().map_err(arrow_err)
}

pub async fn tables(engine: &Engine, cmd: CommandGetTables) -> Result<RecordBatch, EngineError> {
    let mut builder = cmd.into_builder();
    let list = engine.base().catalog_list();
    for catalog in engine.catalog_names() {
        let Some(provider) = list.catalog(&catalog) else { continue };
        let mut schema_names = provider.schema_names();
        schema_names.sort();
        for schema_name in schema_names {
            let Some(schema) = provider.schema(&schema_name) else { continue };
            let mut table_names = schema.table_names();
            table_names.sort();
            for table_name in table_names {
                let table: Option<std::sync::Arc<dyn TableProvider>> = schema.table(&table_name).await?;
                let Some(table) = table else { continue };
                let arrow_schema = table.schema();
                builder
                    .append(&catalog, &schema_name, &table_name, table_type_name(table.table_type()), &arrow_schema)
                    .map_err(arrow_err)?;
            }
        }
    }
    builder.build().map_err(arrow_err)
}

pub fn table_types(_cmd: CommandGetTableTypes) -> Result<RecordBatch, EngineError> {
    let mut builder = CommandGetTableTypes {}.into_builder();
    for t in TABLE_TYPES {
        builder.append(t);
    }
    builder.build().map_err(arrow_err)
}
