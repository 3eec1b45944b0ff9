//! Trino's `rules.json` for file-based system access control: parsing, and the questions a
//! decision asks of it. Patterns are Java-style full matches (`^(?:...)$`); absent patterns match
//! everything; in each section the first rule that matches wins.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// A compiled regex that must match the whole text.
#[derive(Debug, Clone)]
pub(crate) struct Pattern(Option<Regex>);

impl Pattern {
    fn compile(key: &str, p: Option<&str>) -> Result<Self, String> {
        match p {
            None => Ok(Pattern(None)),
            Some(p) => {
                Regex::new(&format!("^(?:{p})$")).map(|r| Pattern(Some(r))).map_err(|e| format!("{key} {p:?}: {e}"))
            }
        }
    }

    fn matches(&self, text: &str) -> bool {
        self.0.as_ref().is_none_or(|r| r.is_match(text))
    }

    /// True if the pattern is absent or any of `texts` matches.
    fn any(&self, texts: &[String]) -> bool {
        self.0.as_ref().is_none_or(|r| texts.iter().any(|t| r.is_match(t)))
    }
}

/// Who a rule is for.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    user: Pattern,
    /// Quiver identities carry no roles: a rule that names a role never matches.
    role: bool,
    group: Pattern,
}

impl Principal {
    fn compile(user: Option<&str>, role: Option<&str>, group: Option<&str>) -> Result<Self, String> {
        Ok(Principal {
            user: Pattern::compile("user", user)?,
            role: role.is_some(),
            group: Pattern::compile("group", group)?,
        })
    }

    pub(crate) fn matches(&self, user: &str, groups: &[String]) -> bool {
        !self.role && self.user.matches(user) && self.group.any(groups)
    }
}

/// What a catalog rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CatalogAccess {
    All,
    ReadOnly,
    None,
}

/// Table privileges, as Trino names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Privilege {
    Select,
    Insert,
    Delete,
    Update,
    Ownership,
    GrantSelect,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAllow {
    Bool(bool),
    Level(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogRule {
    user: Option<String>,
    role: Option<String>,
    group: Option<String>,
    catalog: Option<String>,
    allow: RawAllow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchemaRule {
    user: Option<String>,
    role: Option<String>,
    group: Option<String>,
    catalog: Option<String>,
    schema: Option<String>,
    owner: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Environment {
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ColumnRule {
    pub name: String,
    #[serde(default = "yes")]
    pub allow: bool,
    pub mask: Option<String>,
    mask_environment: Option<Environment>,
}

impl ColumnRule {
    pub(crate) fn mask_identity(&self) -> Option<String> {
        self.mask_environment.as_ref().and_then(|e| e.user.clone())
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTableRule {
    user: Option<String>,
    role: Option<String>,
    group: Option<String>,
    catalog: Option<String>,
    schema: Option<String>,
    table: Option<String>,
    privileges: Vec<Privilege>,
    #[serde(default)]
    columns: Vec<ColumnRule>,
    filter: Option<String>,
    filter_environment: Option<Environment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueryRule {
    user: Option<String>,
    role: Option<String>,
    group: Option<String>,
    #[serde(rename = "queryOwner")]
    query_owner: Option<String>,
    allow: Vec<String>,
}

/// The file as written. Sections Quiver has no operations for are accepted and not enforced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    catalogs: Option<Vec<RawCatalogRule>>,
    schemas: Option<Vec<RawSchemaRule>>,
    tables: Option<Vec<RawTableRule>>,
    queries: Option<Vec<RawQueryRule>>,
    system_information: Option<Value>,
    impersonation: Option<Value>,
    authorization: Option<Value>,
    functions: Option<Value>,
    procedures: Option<Value>,
    system_session_properties: Option<Value>,
    catalog_session_properties: Option<Value>,
}

/// A catalog rule.
#[derive(Debug)]
pub(crate) struct CatalogRule {
    who: Principal,
    catalog: Pattern,
    access: CatalogAccess,
}

/// A schema rule.
#[derive(Debug)]
pub(crate) struct SchemaRule {
    who: Principal,
    catalog: Pattern,
    schema: Pattern,
    owner: bool,
}

/// A table rule.
#[derive(Debug)]
pub(crate) struct TableRule {
    who: Principal,
    catalog: Pattern,
    schema: Pattern,
    table: Pattern,
    pub privileges: Vec<Privilege>,
    pub columns: Vec<ColumnRule>,
    pub filter: Option<String>,
    filter_environment: Option<Environment>,
}

impl TableRule {
    /// The user the row filter runs as, if set.
    pub(crate) fn filter_identity(&self) -> Option<String> {
        self.filter_environment.as_ref().and_then(|e| e.user.clone())
    }

    /// True if the rule grants `p` (GRANT_SELECT implies SELECT).
    pub(crate) fn grants(&self, p: Privilege) -> bool {
        self.privileges.contains(&p) || (p == Privilege::Select && self.privileges.contains(&Privilege::GrantSelect))
    }

    /// False if any of `columns` is denied (`"allow": false`).
    pub(crate) fn columns_allowed(&self, columns: &[String]) -> bool {
        columns.iter().all(|c| self.columns.iter().find(|r| &r.name == c).is_none_or(|r| r.allow))
    }
}

/// A query rule.
#[derive(Debug)]
struct QueryRule {
    who: Principal,
    /// Rules naming a query owner are about other users' queries (view/kill), not ExecuteQuery.
    owner_specific: bool,
    execute: bool,
}

/// A parsed, compiled rules file. `None` sections apply Trino's defaults (allow).
#[derive(Debug)]
pub(crate) struct Rules {
    catalogs: Option<Vec<CatalogRule>>,
    schemas: Option<Vec<SchemaRule>>,
    tables: Option<Vec<TableRule>>,
    queries: Option<Vec<QueryRule>>,
}

impl Rules {
    /// Parses and compiles; errors name the section and rule.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let raw: RawRules = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let ignored = [
            ("system_information", raw.system_information.is_some()),
            ("impersonation", raw.impersonation.is_some()),
            ("authorization", raw.authorization.is_some()),
            ("functions", raw.functions.is_some()),
            ("procedures", raw.procedures.is_some()),
            ("system_session_properties", raw.system_session_properties.is_some()),
            ("catalog_session_properties", raw.catalog_session_properties.is_some()),
        ];
        for (section, _) in ignored.iter().filter(|(_, present)| *present) {
            tracing::warn!(section, "rules.json section has no Quiver operation and is not enforced");
        }
        fn at(section: &'static str, i: usize) -> impl Fn(String) -> String {
            move |e| format!("{section}[{i}]: {e}")
        }
        let catalogs = raw
            .catalogs
            .map(|rules| {
                rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let access = match r.allow {
                            RawAllow::Bool(true) => CatalogAccess::All,
                            RawAllow::Bool(false) => CatalogAccess::None,
                            RawAllow::Level(l) => match l.as_str() {
                                "all" => CatalogAccess::All,
                                "read-only" => CatalogAccess::ReadOnly,
                                "none" => CatalogAccess::None,
                                other => {
                                    return Err(at("catalogs", i)(format!(
                                        "allow {other:?}: expected all, read-only or none"
                                    )));
                                }
                            },
                        };
                        Ok(CatalogRule {
                            who: Principal::compile(r.user.as_deref(), r.role.as_deref(), r.group.as_deref())
                                .map_err(at("catalogs", i))?,
                            catalog: Pattern::compile("catalog", r.catalog.as_deref()).map_err(at("catalogs", i))?,
                            access,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let schemas = raw
            .schemas
            .map(|rules| {
                rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        Ok(SchemaRule {
                            who: Principal::compile(r.user.as_deref(), r.role.as_deref(), r.group.as_deref())
                                .map_err(at("schemas", i))?,
                            catalog: Pattern::compile("catalog", r.catalog.as_deref()).map_err(at("schemas", i))?,
                            schema: Pattern::compile("schema", r.schema.as_deref()).map_err(at("schemas", i))?,
                            owner: r.owner,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let tables = raw
            .tables
            .map(|rules| {
                rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        Ok(TableRule {
                            who: Principal::compile(r.user.as_deref(), r.role.as_deref(), r.group.as_deref())
                                .map_err(at("tables", i))?,
                            catalog: Pattern::compile("catalog", r.catalog.as_deref()).map_err(at("tables", i))?,
                            schema: Pattern::compile("schema", r.schema.as_deref()).map_err(at("tables", i))?,
                            table: Pattern::compile("table", r.table.as_deref()).map_err(at("tables", i))?,
                            privileges: r.privileges,
                            columns: r.columns,
                            filter: r.filter,
                            filter_environment: r.filter_environment,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        let queries = raw
            .queries
            .map(|rules| {
                rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        Ok(QueryRule {
                            who: Principal::compile(r.user.as_deref(), r.role.as_deref(), r.group.as_deref())
                                .map_err(at("queries", i))?,
                            owner_specific: r.query_owner.is_some(),
                            execute: r.allow.iter().any(|a| a == "execute"),
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        Ok(Rules { catalogs, schemas, tables, queries })
    }

    /// The access the caller has to `catalog`: no catalog rules means all.
    pub(crate) fn catalog_access(&self, user: &str, groups: &[String], catalog: &str) -> CatalogAccess {
        match &self.catalogs {
            None => CatalogAccess::All,
            Some(rules) => rules
                .iter()
                .find(|r| r.who.matches(user, groups) && r.catalog.matches(catalog))
                .map_or(CatalogAccess::None, |r| r.access),
        }
    }

    /// May the caller see the schema: owner by the first matching schema rule, or any table
    /// rule for the caller in that schema grants something. No schema rules means owner.
    pub(crate) fn schema_visible(&self, user: &str, groups: &[String], catalog: &str, schema: &str) -> bool {
        let owner = match &self.schemas {
            None => true,
            Some(rules) => rules
                .iter()
                .find(|r| r.who.matches(user, groups) && r.catalog.matches(catalog) && r.schema.matches(schema))
                .is_some_and(|r| r.owner),
        };
        owner
            || match &self.tables {
                None => true,
                Some(rules) => rules.iter().any(|r| {
                    r.who.matches(user, groups)
                        && r.catalog.matches(catalog)
                        && r.schema.matches(schema)
                        && !r.privileges.is_empty()
                }),
            }
    }

    /// The first table rule for the caller and table; `Ok(None)` when no table rules exist
    /// (everything allowed), `Err(())` when rules exist and none matches (nothing allowed).
    pub(crate) fn table_rule(
        &self,
        user: &str,
        groups: &[String],
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<&TableRule>, ()> {
        match &self.tables {
            None => Ok(None),
            Some(rules) => rules
                .iter()
                .find(|r| {
                    r.who.matches(user, groups)
                        && r.catalog.matches(catalog)
                        && r.schema.matches(schema)
                        && r.table.matches(table)
                })
                .map(Some)
                .ok_or(()),
        }
    }

    /// May the caller run statements: no query rules means yes.
    pub(crate) fn may_execute(&self, user: &str, groups: &[String]) -> bool {
        match &self.queries {
            None => true,
            Some(rules) => {
                rules.iter().find(|r| !r.owner_specific && r.who.matches(user, groups)).is_some_and(|r| r.execute)
            }
        }
    }
}
