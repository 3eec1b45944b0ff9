//! Operations and resources, named as Trino's access-control SPI (and its OPA plugin) names them.

use serde::Serialize;

/// An operation a caller asks to perform. Names serialize as Trino's OPA plugin sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Operation {
    /// Run any statement at all.
    ExecuteQuery,
    /// Use a catalog.
    AccessCatalog,
    /// Batch: which of these catalogs may the caller see.
    FilterCatalogs,
    /// Batch: which of these schemas may the caller see.
    FilterSchemas,
    /// Batch: which of these tables may the caller see.
    FilterTables,
    /// Batch: which of these columns may the caller see.
    FilterColumns,
    /// List the schemas of a catalog.
    ShowSchemas,
    /// List the tables of a schema.
    ShowTables,
    /// List the columns of a table.
    ShowColumns,
    /// Read these columns of a table.
    SelectFromColumns,
    /// Insert rows into a table.
    InsertIntoTable,
    /// Delete rows from a table.
    DeleteFromTable,
    /// Update these columns of a table.
    UpdateTableColumns,
    /// Create a table.
    CreateTable,
    /// Drop a table.
    DropTable,
    /// Create a view.
    CreateView,
    /// Drop a view.
    DropView,
    /// Create a schema.
    CreateSchema,
    /// Drop a schema.
    DropSchema,
    /// Fetch the row filters of a table (not an allow/deny decision).
    GetRowFilters,
    /// Fetch the mask of a column (not an allow/deny decision).
    GetColumnMask,
}

impl Operation {
    /// True for operations that change data or the catalog (denied on a read-only catalog).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Operation::InsertIntoTable
                | Operation::DeleteFromTable
                | Operation::UpdateTableColumns
                | Operation::CreateTable
                | Operation::DropTable
                | Operation::CreateView
                | Operation::DropView
                | Operation::CreateSchema
                | Operation::DropSchema
        )
    }

    /// The name Trino uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::ExecuteQuery => "ExecuteQuery",
            Operation::AccessCatalog => "AccessCatalog",
            Operation::FilterCatalogs => "FilterCatalogs",
            Operation::FilterSchemas => "FilterSchemas",
            Operation::FilterTables => "FilterTables",
            Operation::FilterColumns => "FilterColumns",
            Operation::ShowSchemas => "ShowSchemas",
            Operation::ShowTables => "ShowTables",
            Operation::ShowColumns => "ShowColumns",
            Operation::SelectFromColumns => "SelectFromColumns",
            Operation::InsertIntoTable => "InsertIntoTable",
            Operation::DeleteFromTable => "DeleteFromTable",
            Operation::UpdateTableColumns => "UpdateTableColumns",
            Operation::CreateTable => "CreateTable",
            Operation::DropTable => "DropTable",
            Operation::CreateView => "CreateView",
            Operation::DropView => "DropView",
            Operation::CreateSchema => "CreateSchema",
            Operation::DropSchema => "DropSchema",
            Operation::GetRowFilters => "GetRowFilters",
            Operation::GetColumnMask => "GetColumnMask",
        }
    }
}

/// A fully qualified table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct TableRef {
    /// Catalog.
    pub catalog: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
}

impl TableRef {
    /// A table name from its three parts.
    pub fn new(catalog: impl Into<String>, schema: impl Into<String>, table: impl Into<String>) -> Self {
        TableRef { catalog: catalog.into(), schema: schema.into(), table: table.into() }
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

/// What an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Resource {
    /// Nothing in particular (ExecuteQuery).
    None,
    /// A catalog.
    Catalog(String),
    /// A schema of a catalog.
    Schema {
        /// Catalog.
        catalog: String,
        /// Schema.
        schema: String,
    },
    /// A table, with the columns concerned (may be empty).
    Table {
        /// The table.
        table: TableRef,
        /// Columns read or written.
        columns: Vec<String>,
    },
    /// One column of a table, with its type (column masks).
    Column {
        /// The table.
        table: TableRef,
        /// Column name.
        column: String,
        /// Column type as the engine names it (`varchar`, `bigint`, ...).
        column_type: String,
    },
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::None => write!(f, "-"),
            Resource::Catalog(c) => write!(f, "catalog {c}"),
            Resource::Schema { catalog, schema } => write!(f, "schema {catalog}.{schema}"),
            Resource::Table { table, columns } if columns.is_empty() => write!(f, "table {table}"),
            Resource::Table { table, columns } => write!(f, "columns {} of table {table}", columns.join(", ")),
            Resource::Column { table, column, .. } => write!(f, "column {column} of table {table}"),
        }
    }
}
