//! The example policies in conf/policies through embedded Rego: every operation, batch and
//! per-item filtering, row filters, masks, reload and fail-closed behaviour.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

mod remote;
mod vm;

pub(super) fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies")
}

/// The example policies with every entry point configured.
pub(super) fn full_config(path: &Path, batch: bool) -> OpaConfig {
    if batch {
        return OpaConfig::embedded_trino(path);
    }
    let mut c = OpaConfig::embedded(path, "data.trino.allow");
    c.row_filters_policy_uri = Some("data.trino.rowFilters".into());
    c.column_masking_policy_uri = Some("data.trino.columnMask".into());
    c
}

fn example(batch: bool) -> OpaAuthorizer {
    OpaAuthorizer::from_config(full_config(&example_dir(), batch)).expect("example policy loads")
}

pub(super) fn user(name: &str, groups: &[&str]) -> Identity {
    Identity::new(name, "test").with_groups(groups.iter().map(|g| (*g).to_owned()).collect())
}

pub(super) fn alice() -> Identity {
    user("alice", &["analysts"])
}
pub(super) fn bob() -> Identity {
    user("bob", &["engineers"])
}
pub(super) fn carol() -> Identity {
    user("carol", &["analysts", "privacy"])
}
fn mallory() -> Identity {
    user("mallory", &[])
}

pub(super) fn table(name: &str) -> TableRef {
    TableRef::new("tpch", "sf1", name)
}

pub(super) fn columns(table_name: &str, cols: &[&str]) -> Resource {
    Resource::Table { table: table(table_name), columns: cols.iter().map(|c| (*c).to_owned()).collect() }
}

fn customer_columns() -> Vec<ColumnInfo> {
    vec![
        ColumnInfo::new("c_custkey", "bigint"),
        ColumnInfo::new("c_phone", "varchar"),
        ColumnInfo::new("c_address", "varchar"),
    ]
}

fn is_denied(r: Result<(), PolicyError>) -> bool {
    matches!(r, Err(PolicyError::Denied { .. }))
}

#[tokio::test]
async fn each_operation_follows_the_example_policy() {
    let opa = example(true);
    let tpch = Resource::Catalog("tpch".into());
    let sf1 = Resource::Schema { catalog: "tpch".into(), schema: "sf1".into() };

    assert_eq!(opa.check(&mallory(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    assert!(is_denied(opa.check(&mallory(), Operation::AccessCatalog, &tpch).await));
    for who in [alice(), bob(), carol()] {
        assert_eq!(opa.check(&who, Operation::AccessCatalog, &tpch).await, Ok(()), "{}", who.user);
        assert_eq!(opa.check(&who, Operation::ShowTables, &sf1).await, Ok(()), "{}", who.user);
    }
    assert!(is_denied(opa.check(&alice(), Operation::AccessCatalog, &Resource::Catalog("hive".into())).await));

    let read = columns("customer", &["c_name", "c_phone"]);
    assert_eq!(opa.check(&alice(), Operation::SelectFromColumns, &read).await, Ok(()));
    assert_eq!(opa.check(&bob(), Operation::SelectFromColumns, &read).await, Ok(()));
    let balance = columns("customer", &["c_name", "c_acctbal"]);
    let denied = opa.check(&alice(), Operation::SelectFromColumns, &balance).await;
    assert_eq!(
        denied,
        Err(PolicyError::Denied {
            user: "alice".into(),
            operation: "SelectFromColumns",
            resource: "columns c_name, c_acctbal of table tpch.sf1.customer".into(),
        })
    );
    assert_eq!(opa.check(&bob(), Operation::SelectFromColumns, &balance).await, Ok(()));
    let orders = columns("orders", &["o_totalprice"]);
    assert!(is_denied(opa.check(&alice(), Operation::SelectFromColumns, &orders).await));
    assert_eq!(opa.check(&bob(), Operation::SelectFromColumns, &orders).await, Ok(()));
    assert_eq!(opa.check(&alice(), Operation::ShowColumns, &columns("nation", &[])).await, Ok(()));

    let whole = columns("customer", &[]);
    for op in [Operation::InsertIntoTable, Operation::DeleteFromTable, Operation::CreateTable, Operation::DropTable] {
        assert!(is_denied(opa.check(&alice(), op, &whole).await), "{op:?}");
        assert_eq!(opa.check(&bob(), op, &whole).await, Ok(()), "{op:?}");
    }
    let update = columns("customer", &["c_phone"]);
    assert!(is_denied(opa.check(&carol(), Operation::UpdateTableColumns, &update).await));
    assert_eq!(opa.check(&bob(), Operation::UpdateTableColumns, &update).await, Ok(()));
}

#[tokio::test]
async fn batch_and_per_item_filters_agree() {
    for batch in [true, false] {
        let opa = example(batch);
        let catalogs = vec![Resource::Catalog("system".into()), Resource::Catalog("tpch".into())];
        assert_eq!(opa.filter(&alice(), Operation::FilterCatalogs, &catalogs).await, Ok(vec![1]), "batch={batch}");
        assert_eq!(opa.filter(&mallory(), Operation::FilterCatalogs, &catalogs).await, Ok(vec![]));

        let schemas = vec![
            Resource::Schema { catalog: "tpch".into(), schema: "sf1".into() },
            Resource::Schema { catalog: "hive".into(), schema: "web".into() },
        ];
        assert_eq!(opa.filter(&carol(), Operation::FilterSchemas, &schemas).await, Ok(vec![0]));

        let tables: Vec<Resource> =
            ["customer", "orders", "nation", "lineitem"].iter().map(|t| columns(t, &[])).collect();
        assert_eq!(opa.filter(&alice(), Operation::FilterTables, &tables).await, Ok(vec![0, 2]), "batch={batch}");
        assert_eq!(opa.filter(&bob(), Operation::FilterTables, &tables).await, Ok(vec![0, 1, 2, 3]));

        let cols: Vec<String> = ["c_custkey", "c_acctbal", "c_phone"].iter().map(|c| (*c).to_owned()).collect();
        let t = table("customer");
        assert_eq!(opa.filter_columns(&alice(), &t, &cols).await, Ok(vec![0, 2]), "batch={batch}");
        assert_eq!(opa.filter_columns(&bob(), &t, &cols).await, Ok(vec![0, 1, 2]), "batch={batch}");
        assert_eq!(opa.filter_columns(&alice(), &table("orders"), &cols).await, Ok(vec![]));
    }
}

#[tokio::test]
async fn analysts_get_their_region_filter() {
    let opa = example(true);
    let expr = |e: &str| vec![RowFilter { expression: e.into(), identity: None }];
    assert_eq!(opa.row_filters(&alice(), &table("customer")).await, Ok(expr("c_nationkey IN (6, 7, 19, 22, 23)")));
    assert_eq!(opa.row_filters(&alice(), &table("nation")).await, Ok(expr("n_regionkey = 3")));
    assert_eq!(opa.row_filters(&carol(), &table("customer")).await, Ok(expr("c_nationkey IN (1, 2, 3, 17, 24)")));
    assert_eq!(opa.row_filters(&carol(), &table("region")).await, Ok(expr("r_regionkey = 1")));
    // An analyst with no region sees nothing.
    assert_eq!(opa.row_filters(&user("dave", &["analysts"]), &table("customer")).await, Ok(expr("false")));
    assert_eq!(opa.row_filters(&bob(), &table("customer")).await, Ok(vec![]));
    assert_eq!(opa.row_filters(&alice(), &table("orders")).await, Ok(vec![]));
}

#[tokio::test]
async fn pii_is_masked_except_for_privacy_in_batch_and_per_column() {
    for batch in [true, false] {
        let opa = example(batch);
        let t = table("customer");
        for who in [alice(), bob()] {
            let masks = opa.column_masks(&who, &t, &customer_columns()).await.expect("masks");
            assert_eq!(masks.keys().collect::<Vec<_>>(), ["c_address", "c_phone"], "batch={batch}");
            assert_eq!(masks["c_phone"].expression, "concat('XX-XXX-XXX-', substr(c_phone, 12, 4))");
            assert_eq!(masks["c_address"].expression, "'****'");
        }
        assert_eq!(opa.column_masks(&carol(), &t, &customer_columns()).await, Ok(BTreeMap::new()));
        let nation = [ColumnInfo::new("n_name", "varchar")];
        assert_eq!(opa.column_masks(&alice(), &table("nation"), &nation).await, Ok(BTreeMap::new()));
    }
}

#[tokio::test]
async fn without_filter_or_mask_rules_there_are_none() {
    let opa = OpaAuthorizer::from_config(OpaConfig::embedded(example_dir(), "data.trino.allow")).expect("loads");
    assert_eq!(opa.row_filters(&alice(), &table("customer")).await, Ok(vec![]));
    assert_eq!(opa.column_masks(&alice(), &table("customer"), &customer_columns()).await, Ok(BTreeMap::new()));
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write policy");
}

fn policy_dir(allow_body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "p.rego", &format!("package trino\nimport rego.v1\ndefault allow := false\n{allow_body}\n"));
    dir
}

fn reloading(dir: &Path) -> OpaAuthorizer {
    let mut c = OpaConfig::embedded(dir, "data.trino.allow");
    if let Some(e) = c.embedded.as_mut() {
        e.reload_check_ms = 0;
    }
    OpaAuthorizer::from_config(c).expect("loads")
}

#[tokio::test]
async fn policy_reloads_when_a_file_changes() {
    let dir = policy_dir("allow if input.context.identity.user == \"alice\"");
    let opa = reloading(dir.path());
    let v1 = opa.status().version;
    assert_eq!(opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    assert!(is_denied(opa.check(&bob(), Operation::ExecuteQuery, &Resource::None).await));

    write(
        dir.path(),
        "p.rego",
        "package trino\nimport rego.v1\ndefault allow := false\nallow if input.context.identity.user == \"bob\"\n",
    );
    assert_eq!(opa.check(&bob(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    assert!(is_denied(opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await));
    assert_ne!(opa.status().version, v1);

    // A data.json added to the folder is picked up too.
    write(dir.path(), "q.rego", "package trino\nimport rego.v1\nallow if input.context.identity.user in data.extra\n");
    write(dir.path(), "data.json", r#"{"extra": ["carol"]}"#);
    assert_eq!(opa.check(&carol(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
}

#[tokio::test]
async fn broken_policy_keeps_the_previous_version_and_reports_why() {
    let dir = policy_dir("allow if input.context.identity.user == \"alice\"");
    let opa = reloading(dir.path());
    let good = opa.status().version;

    write(dir.path(), "p.rego", "package trino\nallow if {{{ broken\n");
    assert_eq!(opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    let status = opa.status();
    assert_eq!(status.version, good);
    let error = status.last_error.expect("load error reported");
    assert!(error.contains("p.rego"), "{error}");

    // The entry rule disappearing is a load failure too.
    write(dir.path(), "p.rego", "package other\nimport rego.v1\nallow := true\n");
    assert_eq!(opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    let error = opa.status().last_error.expect("load error reported");
    assert!(error.contains("data.trino.allow"), "{error}");

    write(dir.path(), "p.rego", "package trino\nimport rego.v1\nallow := true\n");
    assert_eq!(opa.check(&bob(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    assert_eq!(opa.status().last_error, None);
}

#[tokio::test]
async fn a_policy_that_does_not_load_at_start_is_an_error() {
    let dir = policy_dir("allow if {{");
    let e =
        OpaAuthorizer::from_config(OpaConfig::embedded(dir.path(), "data.trino.allow")).expect_err("must be rejected");
    assert!(matches!(&e, PolicyError::Unavailable(m) if m.contains("p.rego")), "{e}");
    let dir = policy_dir("");
    let mut c = OpaConfig::embedded(dir.path(), "data.trino.allow");
    c.row_filters_policy_uri = Some("data.trino.rowFilters".into());
    let e = OpaAuthorizer::from_config(c).expect_err("must be rejected");
    assert!(matches!(&e, PolicyError::Unavailable(m) if m.contains("data.trino.rowFilters")), "{e}");
}

#[tokio::test]
async fn undefined_or_wrongly_typed_results_fail_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "p.rego",
        "package trino\nimport rego.v1\nallow if input.context.identity.user == \"alice\"\nbatch := \"all\"\n\
         rowFilters := [{\"expr\": 1}]\n",
    );
    let mut c = OpaConfig::embedded(dir.path(), "data.trino.allow");
    c.batch_policy_uri = Some("data.trino.batch".into());
    c.row_filters_policy_uri = Some("data.trino.rowFilters".into());
    let opa = OpaAuthorizer::from_config(c).expect("loads");
    assert_eq!(opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await, Ok(()));
    let undefined = opa.check(&bob(), Operation::ExecuteQuery, &Resource::None).await;
    assert!(matches!(&undefined, Err(PolicyError::Unavailable(m)) if m.contains("undefined")), "{undefined:?}");
    let r = opa.filter(&alice(), Operation::FilterCatalogs, &[Resource::Catalog("tpch".into())]).await;
    assert!(matches!(&r, Err(PolicyError::Unavailable(m)) if m.contains("expected an array")), "{r:?}");
    let r = opa.row_filters(&alice(), &table("customer")).await;
    assert!(matches!(&r, Err(PolicyError::Unavailable(m)) if m.contains("rowFilters")), "{r:?}");
}

#[tokio::test]
async fn out_of_range_batch_indices_fail_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "p.rego", "package trino\nimport rego.v1\ndefault allow := true\nbatch := [0, 5]\n");
    let mut c = OpaConfig::embedded(dir.path(), "data.trino.allow");
    c.batch_policy_uri = Some("data.trino.batch".into());
    let opa = OpaAuthorizer::from_config(c).expect("loads");
    let r = opa.filter(&alice(), Operation::FilterCatalogs, &[Resource::Catalog("a".into())]).await;
    assert!(matches!(r, Err(PolicyError::Unavailable(_))), "{r:?}");
}

#[derive(Default)]
struct Counter(AtomicUsize, parking_lot::Mutex<Vec<String>>);

impl DecisionObserver for Counter {
    fn observe(&self, e: &DecisionEvent<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.lock().push(format!("{} {} {} {}", e.backend, e.user, e.operation, e.decision));
    }
}

#[tokio::test]
async fn every_decision_is_audited_once() {
    let counter = Arc::new(Counter::default());
    let opa = example(true).with_observer(counter.clone());
    opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await.ok();
    opa.check(&alice(), Operation::DropTable, &columns("customer", &[])).await.ok();
    opa.filter(&alice(), Operation::FilterTables, &[columns("customer", &[]), columns("orders", &[])]).await.ok();
    opa.row_filters(&alice(), &table("customer")).await.ok();
    opa.column_masks(&alice(), &table("customer"), &customer_columns()).await.ok();
    assert_eq!(counter.0.load(Ordering::SeqCst), 5);
    assert_eq!(
        *counter.1.lock(),
        vec![
            "opa-embedded alice ExecuteQuery allow",
            "opa-embedded alice DropTable deny",
            "opa-embedded alice FilterTables filter 1/2",
            "opa-embedded alice GetRowFilters row_filters 1",
            "opa-embedded alice GetColumnMask column_masks 2",
        ]
    );
}
