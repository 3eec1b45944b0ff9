//! Metadata calls, answered by the gateway from the merged view of every pool, filtered by
//! the authorizer so a caller never sees the name of something it may not access.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{Any, Command, CommandGetTableTypes};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use prost::Message;
use quiver_policies::{Operation, Resource, TableRef};

use super::statements::ticket_bytes;
use super::{FlightDataStream, GatewayService};
use crate::auth_layer::CallContext;
use crate::error::{GatewayError, Result};
use crate::pool::{PoolCatalog, TableInfo};
use crate::tickets::Sealed;

/// Table types the gateway reports.
const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

fn arrow(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(format!("building metadata: {e}"))
}

/// Schema of GetPrimaryKeys results (Flight SQL spec).
fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of GetExportedKeys, GetImportedKeys and GetCrossReference results.
fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

impl GatewayService {
    /// GetFlightInfo for any metadata command: the schema now, the answer at DoGet.
    pub(crate) fn metadata_info(
        &self,
        ctx: &CallContext,
        command: Command,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let schema = self.metadata_schema(&command)?;
        let sealed =
            self.sealer.seal(&ctx.identity.user, Sealed::Metadata { command: command.into_any().encode_to_vec() });
        FlightInfo::new().try_with_schema(&schema).map_err(arrow).map(|info| {
            info.with_endpoint(FlightEndpoint::new().with_ticket(ticket_bytes(sealed))).with_descriptor(descriptor)
        })
    }

    fn metadata_schema(&self, command: &Command) -> Result<SchemaRef> {
        Ok(match command {
            Command::CommandGetCatalogs(c) => c.into_builder().schema(),
            Command::CommandGetDbSchemas(c) => c.clone().into_builder().schema(),
            Command::CommandGetTables(c) => c.clone().into_builder().schema(),
            Command::CommandGetTableTypes(c) => c.into_builder().schema(),
            Command::CommandGetSqlInfo(c) => c.clone().into_builder(&self.sql_info).schema(),
            Command::CommandGetXdbcTypeInfo(c) => c.into_builder(&self.xdbc).schema(),
            Command::CommandGetPrimaryKeys(_) => primary_keys_schema(),
            Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_) => foreign_keys_schema(),
            other => {
                return Err(GatewayError::InvalidArgument(format!("`{}` is not a metadata command", other.type_url())));
            }
        })
    }

    /// DoGet of a metadata ticket.
    pub(crate) async fn metadata_stream(&self, ctx: &CallContext, command: &[u8]) -> Result<FlightDataStream> {
        let any = Any::decode(command).map_err(|_| GatewayError::InvalidTicket("malformed metadata command".into()))?;
        let command = Command::try_from(any).map_err(|e| GatewayError::InvalidTicket(e.to_string()))?;
        let batch = self.metadata_batch(ctx, command).await?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(|e| tonic::Status::internal(e.to_string()));
        Ok(Box::pin(stream))
    }

    /// The answer to a metadata command.
    pub(crate) async fn metadata_batch(&self, ctx: &CallContext, command: Command) -> Result<RecordBatch> {
        match command {
            Command::CommandGetCatalogs(c) => {
                let view = self.visible(ctx).await?;
                let mut builder = c.into_builder();
                for name in &view.catalogs {
                    builder.append(name);
                }
                builder.build().map_err(arrow)
            }
            Command::CommandGetDbSchemas(c) => {
                let view = self.visible(ctx).await?;
                let mut builder = c.into_builder();
                for (catalog, schema) in &view.schemas {
                    builder.append(catalog, schema);
                }
                builder.build().map_err(arrow)
            }
            Command::CommandGetTables(c) => {
                let view = self.visible(ctx).await?;
                let mut builder = c.into_builder();
                for t in &view.tables {
                    builder.append(&t.catalog, &t.schema, &t.table, &t.table_type, &t.arrow_schema).map_err(arrow)?;
                }
                builder.build().map_err(arrow)
            }
            Command::CommandGetTableTypes(_) => {
                let mut builder = CommandGetTableTypes {}.into_builder();
                for t in TABLE_TYPES {
                    builder.append(t);
                }
                builder.build().map_err(arrow)
            }
            Command::CommandGetSqlInfo(c) => c.into_builder(&self.sql_info).build().map_err(arrow),
            Command::CommandGetXdbcTypeInfo(c) => c.into_builder(&self.xdbc).build().map_err(arrow),
            Command::CommandGetPrimaryKeys(_) => Ok(RecordBatch::new_empty(primary_keys_schema())),
            Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_) => Ok(RecordBatch::new_empty(foreign_keys_schema())),
            other => Err(GatewayError::InvalidArgument(format!("`{}` is not a metadata command", other.type_url()))),
        }
    }

    /// The merged catalog view of all pools, narrowed to what the caller may see.
    async fn visible(&self, ctx: &CallContext) -> Result<PoolCatalog> {
        let mut merged = PoolCatalog::default();
        let mut seen_tables = BTreeSet::new();
        let mut failures = Vec::new();
        for pool in self.router.pools() {
            match pool.catalog().await {
                Ok(view) => {
                    merged.catalogs.extend(view.catalogs.iter().cloned());
                    merged.schemas.extend(view.schemas.iter().cloned());
                    for t in &view.tables {
                        if seen_tables.insert((t.catalog.clone(), t.schema.clone(), t.table.clone())) {
                            merged.tables.push(t.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pool = %pool.name, error = %e, "pool left out of metadata answer");
                    failures.push(e);
                }
            }
        }
        if failures.len() == self.router.pools().len()
            && let Some(e) = failures.into_iter().next()
        {
            return Err(e);
        }
        self.filter_view(ctx, merged).await
    }

    /// `view` (one pool's) narrowed to what the caller may see, columns included.
    pub(crate) async fn visible_in(&self, ctx: &CallContext, view: &PoolCatalog) -> Result<PoolCatalog> {
        self.filter_view(ctx, view.clone()).await
    }

    async fn filter_view(&self, ctx: &CallContext, view: PoolCatalog) -> Result<PoolCatalog> {
        let id = &ctx.identity;
        let catalogs: Vec<String> = view.catalogs.into_iter().collect();
        let resources: Vec<Resource> = catalogs.iter().cloned().map(Resource::Catalog).collect();
        let allowed = self.authorizer.filter(id, Operation::FilterCatalogs, &resources).await?;
        let catalogs: BTreeSet<String> = allowed.into_iter().filter_map(|i| catalogs.get(i).cloned()).collect();

        let schemas: Vec<(String, String)> = view.schemas.into_iter().filter(|(c, _)| catalogs.contains(c)).collect();
        let resources: Vec<Resource> = schemas
            .iter()
            .map(|(catalog, schema)| Resource::Schema { catalog: catalog.clone(), schema: schema.clone() })
            .collect();
        let allowed = self.authorizer.filter(id, Operation::FilterSchemas, &resources).await?;
        let schemas: BTreeSet<(String, String)> = allowed.into_iter().filter_map(|i| schemas.get(i).cloned()).collect();

        let tables: Vec<TableInfo> =
            view.tables.into_iter().filter(|t| schemas.contains(&(t.catalog.clone(), t.schema.clone()))).collect();
        let resources: Vec<Resource> = tables
            .iter()
            .map(|t| Resource::Table {
                table: TableRef { catalog: t.catalog.clone(), schema: t.schema.clone(), table: t.table.clone() },
                columns: vec![],
            })
            .collect();
        let allowed = self.authorizer.filter(id, Operation::FilterTables, &resources).await?;
        let mut tables: Vec<TableInfo> = allowed.into_iter().filter_map(|i| tables.get(i).cloned()).collect();
        // Columns too: a caller never sees the name of a column it may not read.
        for t in &mut tables {
            let table = TableRef { catalog: t.catalog.clone(), schema: t.schema.clone(), table: t.table.clone() };
            let names: Vec<String> = t.arrow_schema.fields().iter().map(|f| f.name().clone()).collect();
            let allowed = self.authorizer.filter_columns(id, &table, &names).await?;
            if allowed.len() != names.len() {
                let fields: Vec<_> =
                    allowed.into_iter().filter_map(|i| t.arrow_schema.fields().get(i).cloned()).collect();
                t.arrow_schema = Arc::new(Schema::new_with_metadata(fields, t.arrow_schema.metadata().clone()));
            }
        }
        Ok(PoolCatalog { catalogs, schemas, tables })
    }
}
