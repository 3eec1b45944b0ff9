//! The input document Trino's OPA plugin sends, built from Quiver's operations and resources,
//! so policies written for Trino evaluate unchanged.
//!
//! ```json
//! {"input": {"context": {"identity": {"user": "alice", "groups": ["analysts"]},
//!                        "softwareStack": {"trinoVersion": "..."}, "queryId": "..."},
//!            "action": {"operation": "SelectFromColumns",
//!                       "resource": {"table": {"catalogName": "c", "schemaName": "s",
//!                                              "tableName": "t", "columns": ["a"]}}}}}
//! ```
//! Batch requests carry `action.filterResources: [...]` instead of `action.resource`.

use quiver_auth::Identity;
use serde_json::{Map, Value, json};

use crate::{Operation, Resource, TableRef};

/// The caller and software stack of one request: `input.context`.
#[derive(Debug, Clone)]
pub struct InputContext<'a> {
    /// Who is asking.
    pub identity: &'a Identity,
    /// Sent as `softwareStack.trinoVersion`.
    pub trino_version: &'a str,
    /// The query the decision is for, when known.
    pub query_id: Option<&'a str>,
}

impl InputContext<'_> {
    /// `input.context` as JSON.
    fn to_json(&self) -> Value {
        let mut context = Map::new();
        context.insert("identity".into(), json!({"user": self.identity.user, "groups": self.identity.groups}));
        context.insert("softwareStack".into(), json!({"trinoVersion": self.trino_version}));
        if let Some(id) = self.query_id {
            context.insert("queryId".into(), Value::String(id.to_owned()));
        }
        Value::Object(context)
    }
}

/// One resource in Trino's shape; `None` for [`Resource::None`] (no `resource` key is sent).
pub fn resource_json(resource: &Resource) -> Option<Value> {
    match resource {
        Resource::None => None,
        Resource::Catalog(name) => Some(json!({"catalog": {"name": name}})),
        Resource::Schema { catalog, schema } => Some(json!({"schema": {"catalogName": catalog, "schemaName": schema}})),
        Resource::Table { table, columns } => Some(table_json(table, columns)),
        Resource::Column { table, column, column_type } => Some(json!({"column": {
            "catalogName": table.catalog,
            "schemaName": table.schema,
            "tableName": table.table,
            "columnName": column,
            "columnType": column_type,
        }})),
    }
}

/// `{"table": {...}}`, with `columns` only when there are some (as Trino sends it).
pub fn table_json(table: &TableRef, columns: &[String]) -> Value {
    let mut t = Map::new();
    t.insert("catalogName".into(), Value::String(table.catalog.clone()));
    t.insert("schemaName".into(), Value::String(table.schema.clone()));
    t.insert("tableName".into(), Value::String(table.table.clone()));
    if !columns.is_empty() {
        t.insert("columns".into(), json!(columns));
    }
    json!({"table": t})
}

/// The document for one decision: `action.resource` (absent for [`Resource::None`]).
pub fn single(context: &InputContext<'_>, operation: Operation, resource: &Resource) -> Value {
    let mut action = Map::new();
    action.insert("operation".into(), Value::String(operation.as_str().into()));
    if let Some(r) = resource_json(resource) {
        action.insert("resource".into(), r);
    }
    document(context, action)
}

/// The document for a batch decision: `action.filterResources`.
pub fn batch(context: &InputContext<'_>, operation: Operation, resources: Vec<Value>) -> Value {
    let mut action = Map::new();
    action.insert("operation".into(), Value::String(operation.as_str().into()));
    action.insert("filterResources".into(), Value::Array(resources));
    document(context, action)
}

fn document(context: &InputContext<'_>, action: Map<String, Value>) -> Value {
    json!({"input": {"context": context.to_json(), "action": action}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::new("alice", "password-file").with_groups(vec!["analysts".into()])
    }

    fn ctx(id: &Identity) -> InputContext<'_> {
        InputContext { identity: id, trino_version: "455", query_id: Some("q1") }
    }

    fn context_json() -> Value {
        json!({"identity": {"user": "alice", "groups": ["analysts"]},
               "softwareStack": {"trinoVersion": "455"}, "queryId": "q1"})
    }

    #[test]
    fn execute_query_has_no_resource() {
        let id = alice();
        let doc = single(&ctx(&id), Operation::ExecuteQuery, &Resource::None);
        assert_eq!(doc, json!({"input": {"context": context_json(), "action": {"operation": "ExecuteQuery"}}}));
    }

    #[test]
    fn query_id_is_left_out_when_unknown() {
        let id = alice();
        let c = InputContext { identity: &id, trino_version: "455", query_id: None };
        let doc = single(&c, Operation::ExecuteQuery, &Resource::None);
        assert_eq!(
            doc["input"]["context"],
            json!({"identity": {"user": "alice", "groups": ["analysts"]}, "softwareStack": {"trinoVersion": "455"}})
        );
    }

    #[test]
    fn catalog_schema_table_and_column_shapes_match_trino() {
        let id = alice();
        let c = ctx(&id);
        let doc = single(&c, Operation::AccessCatalog, &Resource::Catalog("tpch".into()));
        assert_eq!(
            doc["input"]["action"],
            json!({"operation": "AccessCatalog", "resource": {"catalog": {"name": "tpch"}}})
        );

        let schema = Resource::Schema { catalog: "tpch".into(), schema: "sf1".into() };
        let doc = single(&c, Operation::ShowTables, &schema);
        assert_eq!(
            doc["input"]["action"],
            json!({"operation": "ShowTables", "resource": {"schema": {"catalogName": "tpch", "schemaName": "sf1"}}})
        );

        let t = TableRef::new("tpch", "sf1", "customer");
        let cols = Resource::Table { table: t.clone(), columns: vec!["c_name".into(), "c_phone".into()] };
        let doc = single(&c, Operation::SelectFromColumns, &cols);
        assert_eq!(
            doc["input"]["action"],
            json!({"operation": "SelectFromColumns", "resource": {"table": {
                "catalogName": "tpch", "schemaName": "sf1", "tableName": "customer",
                "columns": ["c_name", "c_phone"]}}})
        );

        let no_cols = Resource::Table { table: t.clone(), columns: vec![] };
        let doc = single(&c, Operation::DropTable, &no_cols);
        assert_eq!(
            doc["input"]["action"]["resource"],
            json!({"table": {"catalogName": "tpch", "schemaName": "sf1", "tableName": "customer"}})
        );

        let col = Resource::Column { table: t, column: "c_phone".into(), column_type: "varchar".into() };
        let doc = single(&c, Operation::GetColumnMask, &col);
        assert_eq!(
            doc["input"]["action"],
            json!({"operation": "GetColumnMask", "resource": {"column": {
                "catalogName": "tpch", "schemaName": "sf1", "tableName": "customer",
                "columnName": "c_phone", "columnType": "varchar"}}})
        );
    }

    #[test]
    fn batch_uses_filter_resources() {
        let id = alice();
        let resources =
            ["tpch", "system"].iter().filter_map(|c| resource_json(&Resource::Catalog((*c).into()))).collect();
        let doc = batch(&ctx(&id), Operation::FilterCatalogs, resources);
        assert_eq!(
            doc,
            json!({"input": {"context": context_json(), "action": {"operation": "FilterCatalogs",
                "filterResources": [{"catalog": {"name": "tpch"}}, {"catalog": {"name": "system"}}]}}})
        );
    }
}
