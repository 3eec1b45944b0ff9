//! The `memory` catalog: empty in-memory schemas that `CREATE TABLE` and `INSERT INTO` fill.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};

use super::catalog_error;
use crate::error::EngineError;

/// Builds the catalog `name` with one empty [`MemorySchemaProvider`] per configured schema
/// (names lowercased, as unquoted SQL identifiers are).
pub(super) fn build(name: &str, schemas: &[String]) -> Result<Arc<dyn CatalogProvider>, EngineError> {
    let catalog = MemoryCatalogProvider::new();
    for schema in schemas {
        let schema = schema.to_ascii_lowercase();
        if catalog.schema(&schema).is_some() {
            return Err(catalog_error(name, format!("schema `{schema}` is listed twice")));
        }
        catalog
            .register_schema(&schema, Arc::new(MemorySchemaProvider::new()))
            .map_err(|e| catalog_error(name, format!("schema `{schema}`: {e}")))?;
    }
    Ok(Arc::new(catalog))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::prelude::SessionContext;

    use crate::config::CatalogConfig;

    #[tokio::test]
    async fn memory_catalog_accepts_create_insert_select() {
        let ctx = SessionContext::new();
        let config = CatalogConfig::Memory { name: "mem".into(), schemas: vec!["default".into(), "Scratch".into()] };
        let catalog = crate::catalogs::build_catalog(&config, &ctx.state()).await.expect("memory catalog");
        let mut schemas = catalog.schema_names();
        schemas.sort();
        assert_eq!(schemas, ["default", "scratch"]);
        ctx.register_catalog("mem", catalog);

        for sql in [
            "CREATE TABLE mem.scratch.t (id BIGINT, name VARCHAR)",
            "INSERT INTO mem.scratch.t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            "CREATE TABLE mem.\"default\".u AS SELECT id * 10 AS id FROM mem.scratch.t",
            "INSERT INTO mem.\"default\".u VALUES (40)",
        ] {
            ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        }
        let batches = ctx
            .sql("SELECT sum(t.id) + (SELECT sum(id) FROM mem.\"default\".u) FROM mem.scratch.t AS t")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let total = batches[0].column(0).as_any().downcast_ref::<Int64Array>().expect("i64").value(0);
        assert_eq!(total, 6 + 100);
    }

    #[tokio::test]
    async fn memory_catalog_rejects_duplicate_schemas() {
        let ctx = SessionContext::new();
        let config = CatalogConfig::Memory { name: "mem".into(), schemas: vec!["a".into(), "A".into()] };
        let err = crate::catalogs::build_catalog(&config, &ctx.state()).await.expect_err("must fail");
        assert!(err.to_string().contains("catalog `mem`"), "{err}");
    }
}
