# Quiver example policy, written as Trino's OPA plugin users write theirs: it runs unchanged
# behind Trino (opa.policy.uri=.../v1/data/trino/allow) and behind Quiver.
#
#   engineers   full access to the tpch catalog
#   analysts    read tpch.*.{customer,nation,region}, only rows of their own region
#               (data.analyst_regions), never customer.c_acctbal
#   privacy     sees PII columns (data.pii_columns) in clear; everyone else sees them masked
#   everyone    may run statements (ExecuteQuery); what a statement reads is checked separately;
#               the `memory` catalog is everyone's scratch space (tables and views of their own)
#
# Entry points: data.trino.allow, data.trino.batch, data.trino.rowFilters,
# data.trino.columnMask, data.trino.batchColumnMasks.
package trino

import rego.v1

default allow := false

allow if input.action.operation == "ExecuteQuery"

allow if permitted(input.action.operation, input.action.resource)

# What each group may do with one resource. A function rather than rules reading
# input.action.resource, so the batch rules below can ask it per item without `with` (which
# keeps every entry point on the Rego VM; `with` is evaluated by the slower interpreter).

# Everyone may run statements; what a statement reads is checked separately.
permitted("ExecuteQuery", _) := true

# Engineers: everything in tpch.
permitted(_, resource) if {
	"engineers" in input.context.identity.groups
	catalog_of(resource) == "tpch"
}

# Scratch space: anyone may create, read and drop tables and views in `memory`. Row filters
# and masks still apply to whatever such a view or table reads from tpch.
permitted(_, resource) if catalog_of(resource) == "memory"

# Analysts: the tpch catalog and its schemas, for listing and browsing.
permitted(operation, resource) if {
	is_analyst
	operation in {"AccessCatalog", "FilterCatalogs", "ShowSchemas"}
	resource.catalog.name == "tpch"
}

permitted(operation, resource) if {
	is_analyst
	operation in {"FilterSchemas", "ShowTables"}
	resource.schema.catalogName == "tpch"
}

# Analysts: read their tables, except the hidden columns.
permitted(operation, resource) if {
	is_analyst
	operation in {"FilterTables", "ShowColumns", "FilterColumns", "SelectFromColumns"}
	table := resource.table
	table.catalogName == "tpch"
	table.tableName in analyst_tables
	every column in object.get(table, "columns", []) {
		not column in object.get(hidden_columns, table.tableName, set())
	}
}

is_analyst if "analysts" in input.context.identity.groups

analyst_tables := {"customer", "nation", "region"}

hidden_columns := {"customer": {"c_acctbal"}}

catalog_of(resource) := resource.catalog.name

catalog_of(resource) := resource.schema.catalogName

catalog_of(resource) := resource.table.catalogName

catalog_of(resource) := resource.column.catalogName

# Batch filtering (FilterCatalogs, FilterSchemas, FilterTables, FilterColumns): the indices of
# filterResources the caller may see.
batch contains i if {
	some i, resource in input.action.filterResources
	permitted(input.action.operation, resource)
}

# FilterColumns sends one table carrying all its columns; the indices refer to the columns.
batch contains i if {
	input.action.operation == "FilterColumns"
	count(input.action.filterResources) == 1
	resource := input.action.filterResources[0]
	some i, column in resource.table.columns
	permitted("FilterColumns", object.union(resource, {"table": {"columns": [column]}}))
}

# Row filters: analysts see only their region. An analyst with no region sees no rows.
region_filter_column := {"customer": "c_nationkey", "nation": "n_regionkey", "region": "r_regionkey"}

rowFilters contains {"expression": expression} if {
	is_analyst
	not "engineers" in input.context.identity.groups
	table := input.action.resource.table
	table.catalogName == "tpch"
	# Iterating rather than `column := region_filter_column[table.tableName]`: for a table
	# without a region column that lookup is undefined, and regorus's Rego VM (engine = "vm")
	# would still call region_expression with it (see docs/authorization.md).
	some table_name, column in region_filter_column
	table_name == table.tableName
	expression := region_expression(column)
}

region_expression(column) := sprintf("%s IN (%s)", [column, concat(", ", [sprintf("%d", [k]) | some k in user_region.nationkeys])]) if {
	column == "c_nationkey"
	user_region
}

region_expression(column) := sprintf("%s = %d", [column, user_region.regionkey]) if {
	column != "c_nationkey"
	user_region
}

region_expression(_) := "false" if not user_region

user_region := data.regions[data.analyst_regions[input.context.identity.user]]

# Column masks: PII in clear only for the privacy group. Names and types stay as they are.
columnMask := column_mask(input.action.resource.column)

batchColumnMasks contains {"index": i, "viewExpression": mask} if {
	some i, resource in input.action.filterResources
	mask := column_mask(resource.column)
}

column_mask(column) := {"expression": mask} if {
	column.catalogName == "tpch"
	column.columnName in object.get(data.pii_columns, column.tableName, [])
	not "privacy" in input.context.identity.groups
	mask := object.get(masks, column.columnName, "CAST(NULL AS varchar)")
}

masks := {
	"c_phone": "concat('XX-XXX-XXX-', substr(c_phone, 12, 4))",
	"c_address": "'****'",
}
