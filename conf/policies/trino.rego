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

# Engineers: everything in tpch.
allow if {
	"engineers" in input.context.identity.groups
	resource_catalog == "tpch"
}

# Scratch space: anyone may create, read and drop tables and views in `memory`. Row filters
# and masks still apply to whatever such a view or table reads from tpch.
allow if resource_catalog == "memory"

# Analysts: the tpch catalog and its schemas, for listing and browsing.
allow if {
	is_analyst
	input.action.operation in {"AccessCatalog", "FilterCatalogs", "ShowSchemas"}
	input.action.resource.catalog.name == "tpch"
}

allow if {
	is_analyst
	input.action.operation in {"FilterSchemas", "ShowTables"}
	input.action.resource.schema.catalogName == "tpch"
}

# Analysts: read their tables, except the hidden columns.
allow if {
	is_analyst
	input.action.operation in {"FilterTables", "ShowColumns", "FilterColumns", "SelectFromColumns"}
	table := input.action.resource.table
	table.catalogName == "tpch"
	table.tableName in analyst_tables
	every column in object.get(table, "columns", []) {
		not column in object.get(hidden_columns, table.tableName, set())
	}
}

is_analyst if "analysts" in input.context.identity.groups

analyst_tables := {"customer", "nation", "region"}

hidden_columns := {"customer": {"c_acctbal"}}

resource_catalog := input.action.resource.catalog.name

resource_catalog := input.action.resource.schema.catalogName

resource_catalog := input.action.resource.table.catalogName

resource_catalog := input.action.resource.column.catalogName

# Batch filtering (FilterCatalogs, FilterSchemas, FilterTables, FilterColumns): the indices of
# filterResources the caller may see.
batch contains i if {
	some i
	raw := input.action.filterResources[i]
	allow with input.action.resource as raw
}

# FilterColumns sends one table carrying all its columns; the indices refer to the columns.
batch contains i if {
	input.action.operation == "FilterColumns"
	count(input.action.filterResources) == 1
	raw := input.action.filterResources[0]
	count(raw.table.columns) > 0
	per_column := [object.union(raw, {"table": {"columns": [c]}}) | some c in raw.table.columns]
	some i
	allow with input.action.resource as per_column[i]
}

# Row filters: analysts see only their region. An analyst with no region sees no rows.
region_filter_column := {"customer": "c_nationkey", "nation": "n_regionkey", "region": "r_regionkey"}

rowFilters contains {"expression": expression} if {
	is_analyst
	not "engineers" in input.context.identity.groups
	table := input.action.resource.table
	table.catalogName == "tpch"
	column := region_filter_column[table.tableName]
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
columnMask := {"expression": mask} if {
	column := input.action.resource.column
	column.catalogName == "tpch"
	column.columnName in object.get(data.pii_columns, column.tableName, [])
	not "privacy" in input.context.identity.groups
	mask := object.get(masks, column.columnName, "CAST(NULL AS varchar)")
}

masks := {
	"c_phone": "concat('XX-XXX-XXX-', substr(c_phone, 12, 4))",
	"c_address": "'****'",
}

batchColumnMasks contains {"index": i, "viewExpression": mask} if {
	some i
	raw := input.action.filterResources[i]
	mask := columnMask with input.action.resource as raw
}
