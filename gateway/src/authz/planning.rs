//! The gateway's own planning context: the tables and views a pool serves, as schema-only
//! DataFusion tables, so a statement can be planned (and its columns resolved) before anything
//! reaches a worker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::common::TableReference;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::view::ViewTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, SubqueryAlias, TableScanBuilder};
use datafusion::prelude::SessionConfig;

use quiver_policies::TableRef;

use crate::pool::PoolCatalog;

/// A pool's tables and views, ready to plan statements against.
#[derive(Debug, Clone)]
pub struct Planning {
    /// The session (clone it and set the defaults per statement).
    pub state: SessionState,
    /// Views the gateway could not expand (no definition, or one that does not plan here).
    pub opaque_views: BTreeSet<TableRef>,
    /// Every view of the pool (expanded or not).
    pub views: BTreeSet<TableRef>,
}

/// Builds a session whose catalogs hold `catalog`'s tables (no data) and views (planned from
/// their definitions, so they expand into the tables they read).
pub async fn planning_state(catalog: &PoolCatalog) -> Planning {
    let mut opaque_views = BTreeSet::new();
    let views_all: BTreeSet<TableRef> = catalog
        .tables
        .iter()
        .filter(|t| t.table_type == "VIEW" || t.definition.is_some())
        .map(|t| TableRef::new(&t.catalog, &t.schema, &t.table))
        .collect();
    let mut config = SessionConfig::new().with_information_schema(true).with_create_default_catalog_and_schema(false);
    // The same string types the engine plans with.
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    let mut state = SessionStateBuilder::new().with_config(config).with_default_features().build();
    let _ = datafusion::execution::FunctionRegistry::register_udf(
        &mut state,
        Arc::new(quiver_engine::barrier::policy_filter_udf()),
    );

    let mut schemas: BTreeMap<(String, String), Arc<MemorySchemaProvider>> = BTreeMap::new();
    let mut catalogs: BTreeMap<String, Arc<MemoryCatalogProvider>> = BTreeMap::new();
    for name in &catalog.catalogs {
        catalogs.insert(name.clone(), Arc::new(MemoryCatalogProvider::new()));
    }
    for (c, s) in &catalog.schemas {
        let cat = catalogs.entry(c.clone()).or_insert_with(|| Arc::new(MemoryCatalogProvider::new()));
        let provider = Arc::new(MemorySchemaProvider::new());
        let _ = cat.register_schema(s, provider.clone());
        schemas.insert((c.clone(), s.clone()), provider);
    }
    let schema_of = |schemas: &mut BTreeMap<(String, String), Arc<MemorySchemaProvider>>,
                     catalogs: &mut BTreeMap<String, Arc<MemoryCatalogProvider>>,
                     c: &str,
                     s: &str| {
        schemas
            .entry((c.to_string(), s.to_string()))
            .or_insert_with(|| {
                let provider = Arc::new(MemorySchemaProvider::new());
                let cat = catalogs.entry(c.to_string()).or_insert_with(|| Arc::new(MemoryCatalogProvider::new()));
                let _ = cat.register_schema(s, provider.clone());
                provider
            })
            .clone()
    };
    let mut views = Vec::new();
    for t in &catalog.tables {
        let schema = schema_of(&mut schemas, &mut catalogs, &t.catalog, &t.schema);
        match &t.definition {
            Some(definition) => views.push((t, definition, schema)),
            None => {
                if t.table_type == "VIEW" {
                    opaque_views.insert(TableRef::new(&t.catalog, &t.schema, &t.table));
                }
                let _ = schema.register_table(t.table.clone(), Arc::new(EmptyTable::new(t.arrow_schema.clone())));
            }
        }
    }
    for (name, provider) in &catalogs {
        state.catalog_list().register_catalog(name.clone(), provider.clone() as Arc<dyn CatalogProvider>);
    }
    // Views may read views: plan them in rounds until no more succeed. A view whose
    // definition does not plan here stays a plain table (its own name is then what policies
    // are asked about).
    let mut pending = views;
    let mut round = 0;
    loop {
        round += 1;
        let mut failed = Vec::new();
        let before = pending.len();
        for (t, definition, schema) in pending {
            let mut view_state = state.clone();
            let options = view_state.config_mut().options_mut();
            options.catalog.default_catalog = t.catalog.clone();
            options.catalog.default_schema = t.schema.clone();
            match view_state.create_logical_plan(definition).await {
                Ok(LogicalPlan::Ddl(DdlStatement::CreateView(view))) => {
                    // Names inside the view resolve against the view's own catalog and schema,
                    // not those of the statement that reads it: name every table in full.
                    let input = match qualify_scans(Arc::unwrap_or_clone(view.input), &t.catalog, &t.schema) {
                        Ok(input) => input,
                        Err(e) => {
                            failed.push((t, definition, schema, e));
                            continue;
                        }
                    };
                    let table = ViewTable::new(input, Some(definition.clone()));
                    let _ = schema.deregister_table(&t.table);
                    let _ = schema.register_table(t.table.clone(), Arc::new(table));
                }
                Ok(_) => {
                    opaque_views.insert(TableRef::new(&t.catalog, &t.schema, &t.table));
                    tracing::warn!(view = %format!("{}.{}.{}", t.catalog, t.schema, t.table), "view definition is not a CREATE VIEW; treated as a table");
                    let _ = schema.register_table(t.table.clone(), Arc::new(EmptyTable::new(t.arrow_schema.clone())));
                }
                Err(e) => failed.push((t, definition, schema, e)),
            }
        }
        if failed.is_empty() {
            return Planning { state, opaque_views, views: views_all };
        }
        if failed.len() == before || round == 8 {
            for (t, _, schema, e) in failed {
                opaque_views.insert(TableRef::new(&t.catalog, &t.schema, &t.table));
                tracing::warn!(view = %format!("{}.{}.{}", t.catalog, t.schema, t.table), error = %e, "view definition does not plan in the gateway; treated as a table");
                let _ = schema.register_table(t.table.clone(), Arc::new(EmptyTable::new(t.arrow_schema.clone())));
            }
            return Planning { state, opaque_views, views: views_all };
        }
        pending = failed.into_iter().map(|(t, d, s, _)| (t, d, s)).collect();
    }
}

/// Every scan in `plan` (subqueries included) names its table in full, resolved against
/// `catalog` and `schema`; an alias keeps the name the plan used, so nothing above changes.
fn qualify_scans(plan: LogicalPlan, catalog: &str, schema: &str) -> datafusion::common::Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::TableScan(scan) if !matches!(scan.table_name, TableReference::Full { .. }) => {
            let r = scan.table_name.clone().resolve(catalog, schema);
            let name = scan.table_name.clone();
            let full = TableReference::full(r.catalog, r.schema, r.table);
            let scan = TableScanBuilder::new(full, scan.source)
                .with_projection(scan.projection)
                .with_filters(scan.filters)
                .with_fetch(scan.fetch)
                .build()?;
            Ok(Transformed::yes(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                Arc::new(LogicalPlan::TableScan(scan)),
                name,
            )?)))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}
