//! conf/policies/rules.json (same intent as the example Rego), first-match semantics, reload.

use std::path::Path;

use super::*;

fn user(name: &str, groups: &[&str]) -> Identity {
    Identity::new(name, "test").with_groups(groups.iter().map(|g| (*g).to_owned()).collect())
}
fn alice() -> Identity {
    user("alice", &["analysts"])
}
fn bob() -> Identity {
    user("bob", &["engineers"])
}
fn carol() -> Identity {
    user("carol", &["analysts", "privacy"])
}
fn table(name: &str) -> TableRef {
    TableRef::new("tpch", "sf1", name)
}
fn columns(t: &str, cols: &[&str]) -> Resource {
    Resource::Table { table: table(t), columns: cols.iter().map(|c| (*c).to_owned()).collect() }
}

fn example() -> RulesAuthorizer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies/rules.json");
    RulesAuthorizer::load(RulesConfig { path, reload_check_ms: 1_000 }).expect("example rules load")
}

fn from_text(dir: &Path, text: &str) -> RulesAuthorizer {
    let path = dir.join("rules.json");
    std::fs::write(&path, text).expect("write");
    RulesAuthorizer::load(RulesConfig { path, reload_check_ms: 0 }).expect("rules load")
}

#[tokio::test]
async fn example_rules_have_the_same_intent_as_the_example_rego() {
    let rules = example();
    let tpch = Resource::Catalog("tpch".into());
    for who in [alice(), bob(), carol()] {
        assert_eq!(rules.check(&who, Operation::ExecuteQuery, &Resource::None).await, Ok(()));
        assert_eq!(rules.check(&who, Operation::AccessCatalog, &tpch).await, Ok(()), "{}", who.user);
    }
    let nobody = user("mallory", &[]);
    assert!(rules.check(&nobody, Operation::AccessCatalog, &tpch).await.is_err());

    let read = columns("customer", &["c_name", "c_phone"]);
    assert_eq!(rules.check(&alice(), Operation::SelectFromColumns, &read).await, Ok(()));
    assert!(rules.check(&alice(), Operation::SelectFromColumns, &columns("customer", &["c_acctbal"])).await.is_err());
    assert!(rules.check(&alice(), Operation::SelectFromColumns, &columns("orders", &["o_orderkey"])).await.is_err());
    assert_eq!(rules.check(&bob(), Operation::SelectFromColumns, &columns("orders", &["o_orderkey"])).await, Ok(()));
    // Read-only catalog: no writes for analysts, whatever the table rule says.
    assert!(rules.check(&alice(), Operation::InsertIntoTable, &columns("customer", &[])).await.is_err());
    assert_eq!(rules.check(&bob(), Operation::DropTable, &columns("customer", &[])).await, Ok(()));

    let tables: Vec<Resource> = ["customer", "orders", "nation"].iter().map(|t| columns(t, &[])).collect();
    assert_eq!(rules.filter(&alice(), Operation::FilterTables, &tables).await, Ok(vec![0, 2]));
    assert_eq!(rules.filter(&bob(), Operation::FilterTables, &tables).await, Ok(vec![0, 1, 2]));
    let cols: Vec<String> = ["c_custkey", "c_acctbal", "c_phone"].iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(rules.filter_columns(&alice(), &table("customer"), &cols).await, Ok(vec![0, 2]));
    let schemas = vec![
        Resource::Schema { catalog: "tpch".into(), schema: "sf1".into() },
        Resource::Schema { catalog: "hive".into(), schema: "web".into() },
    ];
    assert_eq!(rules.filter(&alice(), Operation::FilterSchemas, &schemas).await, Ok(vec![0]));

    let f = |e: &str| Ok(vec![RowFilter { expression: e.into(), identity: None }]);
    assert_eq!(rules.row_filters(&alice(), &table("customer")).await, f("c_nationkey IN (6, 7, 19, 22, 23)"));
    assert_eq!(rules.row_filters(&carol(), &table("nation")).await, f("n_regionkey = 1"));
    assert_eq!(rules.row_filters(&user("dave", &["analysts"]), &table("customer")).await, f("false"));
    assert_eq!(rules.row_filters(&bob(), &table("customer")).await, Ok(vec![]));

    let cust = [ColumnInfo::new("c_custkey", "bigint"), ColumnInfo::new("c_phone", "varchar")];
    let masked = rules.column_masks(&alice(), &table("customer"), &cust).await.expect("masks");
    assert_eq!(masked.keys().collect::<Vec<_>>(), ["c_phone"]);
    assert_eq!(rules.column_masks(&bob(), &table("customer"), &cust).await.map(|m| m.len()), Ok(1));
    assert_eq!(rules.column_masks(&carol(), &table("customer"), &cust).await, Ok(BTreeMap::new()));
}

#[tokio::test]
async fn first_matching_rule_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = from_text(
        dir.path(),
        r#"{"catalogs": [{"user": "alice", "catalog": "c", "allow": "none"}, {"catalog": "c", "allow": "all"}],
            "tables": [
              {"user": "al.*", "table": "t", "privileges": ["SELECT"], "filter": "x = 1",
               "filter_environment": {"user": "svc"},
               "columns": [{"name": "secret", "mask": "'x'", "mask_environment": {"user": "svc"}}]},
              {"table": "t", "privileges": ["SELECT", "DELETE"]}
            ]}"#,
    );
    let t = TableRef::new("c", "s", "t");
    let whole = Resource::Table { table: t.clone(), columns: vec![] };
    // alice's first catalog rule says none, even though the second would allow.
    assert!(rules.check(&user("alice", &[]), Operation::AccessCatalog, &Resource::Catalog("c".into())).await.is_err());
    assert_eq!(rules.check(&user("bob", &[]), Operation::DeleteFromTable, &whole).await, Ok(()));
    // "al.*" must match the whole name: "albert" matches, "sal" does not.
    let albert = user("albert", &[]);
    assert!(rules.check(&albert, Operation::DeleteFromTable, &whole).await.is_err());
    assert_eq!(
        rules.row_filters(&albert, &t).await,
        Ok(vec![RowFilter { expression: "x = 1".into(), identity: Some("svc".into()) }])
    );
    let masks = rules.column_masks(&albert, &t, &[ColumnInfo::new("secret", "varchar")]).await.expect("masks");
    assert_eq!(masks.get("secret"), Some(&ColumnMask { expression: "'x'".into(), identity: Some("svc".into()) }));
    assert_eq!(rules.row_filters(&user("sal", &[]), &t).await, Ok(vec![]));
}

#[tokio::test]
async fn missing_sections_allow_and_role_rules_never_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = from_text(
        dir.path(),
        r#"{"queries": [{"role": "admin", "allow": ["execute"]}, {"user": "bob", "allow": ["execute"]}]}"#,
    );
    let whole = columns("customer", &[]);
    assert_eq!(rules.check(&bob(), Operation::DropTable, &whole).await, Ok(()));
    assert_eq!(rules.check(&bob(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    assert!(rules.check(&alice(), Operation::ExecuteQuery, &Resource::None).await.is_err());
}

#[tokio::test]
async fn bad_files_are_rejected_at_start_and_kept_out_on_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.json");
    for (text, needle) in [
        (r#"{"catalogs": [{"catalog": "c", "allow": "some"}]}"#, "catalogs[0]"),
        (r#"{"tables": [{"table": "(", "privileges": []}]}"#, "tables[0]"),
        (r#"{"tables": [{"table": "t", "privileges": ["READ"]}]}"#, "READ"),
        (r#"{"catalog": []}"#, "unknown field `catalog`"),
    ] {
        std::fs::write(&path, text).expect("write");
        let e = RulesAuthorizer::load(RulesConfig { path: path.clone(), reload_check_ms: 0 })
            .expect_err("must be rejected");
        assert!(e.to_string().contains(needle), "{e}");
    }

    let rules = from_text(dir.path(), r#"{"catalogs": [{"user": "alice", "allow": "all"}]}"#);
    let c = Resource::Catalog("c".into());
    assert_eq!(rules.check(&alice(), Operation::AccessCatalog, &c).await, Ok(()));
    let v1 = rules.status().version;
    std::fs::write(&path, "{ not json").expect("write");
    assert_eq!(rules.check(&alice(), Operation::AccessCatalog, &c).await, Ok(()));
    assert!(rules.status().last_error.is_some());
    assert_eq!(rules.status().version, v1);
    std::fs::write(&path, r#"{"catalogs": [{"user": "bob", "allow": "all"}]}"#).expect("write");
    assert!(rules.check(&alice(), Operation::AccessCatalog, &c).await.is_err());
    assert_eq!(rules.check(&bob(), Operation::AccessCatalog, &c).await, Ok(()));
    assert_eq!(rules.status().last_error, None);
}
