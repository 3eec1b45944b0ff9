use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::resource_groups::{GroupId, SelectionContext};

const EXAMPLE: &str = include_str!("../../../conf/resource-groups.json");

fn parse(doc: &Value) -> Result<ResourceGroupsSpec, SpecError> {
    ResourceGroupsSpec::from_json(&doc.to_string())
}

/// The error for `doc`, as `path: message`.
fn error(doc: Value) -> String {
    match parse(&doc) {
        Ok(_) => panic!("accepted {doc}"),
        Err(e) => e.to_string(),
    }
}

/// A valid two-level document to break one key at a time.
fn base() -> Value {
    json!({
        "rootGroups": [
            {"name": "global", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 10, "maxQueued": 10,
             "subGroups": [
                {"name": "adhoc", "softMemoryLimit": "50%", "hardConcurrencyLimit": 5, "maxQueued": 5},
                {"name": "etl", "softMemoryLimit": "50%", "hardConcurrencyLimit": 5, "maxQueued": 5}
             ]},
            {"name": "admin", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}
        ],
        "selectors": [{"group": "global.adhoc"}]
    })
}

#[test]
fn the_example_file_parses_as_trino_writes_it() {
    let spec = ResourceGroupsSpec::from_json(EXAMPLE).expect("conf/resource-groups.json is valid");
    assert_eq!(spec.cpu_quota_period(), Some(Duration::from_secs(3600)));
    let names: Vec<&str> = spec.root_groups().iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["global", "admin"]);
    let global = &spec.root_groups()[0];
    assert_eq!(global.scheduling_policy, SchedulingPolicy::Weighted);
    assert_eq!(global.soft_memory_limit, MemoryLimit::Fraction(0.8));
    assert_eq!(global.hard_cpu_limit, Some(Duration::from_secs(48 * 3600)));
    let adhoc = &global.sub_groups[2];
    assert_eq!((adhoc.name.as_str(), adhoc.scheduling_weight), ("adhoc", 3));
    assert_eq!(adhoc.scheduling_policy, SchedulingPolicy::WeightedFair);
    let per_user = &adhoc.sub_groups[1];
    assert!(per_user.name.is_template());
    assert_eq!((per_user.soft_concurrency_limit, per_user.hard_concurrency_limit), (1, 2));
    assert_eq!(per_user.soft_memory_limit, MemoryLimit::Bytes(4 << 30));
    // A group without softConcurrencyLimit takes the hard limit as its soft limit.
    assert_eq!(global.sub_groups[0].soft_concurrency_limit, 4);
    assert_eq!(global.sub_groups[1].sub_groups[0].scheduling_policy, SchedulingPolicy::QueryPriority);
    assert_eq!(global.sub_groups[1].sub_groups[1].scheduling_policy, SchedulingPolicy::Fair);

    let groups = vec!["admins".to_string()];
    let tags = vec!["etl".to_string()];
    let select = |ctx: SelectionContext| spec.select(&ctx).map(|s| s.id().to_string());
    assert_eq!(select(SelectionContext { user: "ops-jane", ..Default::default() }).as_deref(), Some("admin"));
    assert_eq!(select(SelectionContext { user: "x", groups: &groups, ..Default::default() }).as_deref(), Some("admin"));
    let airflow = SelectionContext { user: "svc", source: Some("prod-airflow-1"), ..Default::default() };
    assert_eq!(
        select(SelectionContext { query_type: Some(crate::QueryType::DataDefinition), ..airflow }).as_deref(),
        Some("global.ddl")
    );
    assert_eq!(select(SelectionContext { client_tags: &tags, ..airflow }).as_deref(), Some("global.pipeline.etl"));
    assert_eq!(select(airflow).as_deref(), Some("global.pipeline.reporting"));
    let bi = SelectionContext { user: "kayla", source: Some("tableau-desktop"), ..Default::default() };
    assert_eq!(select(bi).as_deref(), Some("global.adhoc.bi-tableau.kayla"));
    assert_eq!(select(SelectionContext { user: "alice", ..Default::default() }).as_deref(), Some("global.adhoc.alice"));
}

#[test]
fn trino_aliases_and_ignored_keys_are_accepted() {
    let mut doc = base();
    let admin = &mut doc["rootGroups"][1];
    admin.as_object_mut().map(|o| o.remove("hardConcurrencyLimit"));
    admin["maxRunning"] = json!(3);
    admin["jmxExport"] = json!(false);
    admin["softPhysicalDataScanLimit"] = json!("10TB");
    doc["rootGroups"][0]["schedulingPolicy"] = json!("WEIGHTED_FAIR");
    let spec = parse(&doc).expect("valid");
    assert_eq!(spec.root_groups()[1].hard_concurrency_limit, 3);
    assert_eq!(spec.root_groups()[1].soft_physical_data_scan_limit, Some(10 << 40));
    assert_eq!(spec.root_groups()[0].scheduling_policy, SchedulingPolicy::WeightedFair);
}

#[test]
fn json_and_shape_errors_name_the_path() {
    let mut doc = base();
    doc["rootGroups"][0]["subGroups"][1]["maxQueud"] = json!(3);
    let e = error(doc);
    assert!(e.starts_with("rootGroups[0].subGroups[1]"), "{e}");
    assert!(e.contains("unknown field `maxQueud`"), "{e}");

    let mut doc = base();
    doc["rootGroups"][1]["maxQueued"] = json!("ten");
    let e = error(doc);
    assert!(e.starts_with("rootGroups[1].maxQueued: invalid type"), "{e}");

    let mut doc = base();
    doc["rootGroups"][0].as_object_mut().map(|o| o.remove("softMemoryLimit"));
    assert!(error(doc).contains("missing field `softMemoryLimit`"));

    let mut doc = base();
    doc["rootGroups"][1].as_object_mut().map(|o| o.remove("hardConcurrencyLimit"));
    assert_eq!(error(doc), "rootGroups[1]: missing field `hardConcurrencyLimit`");

    assert!(ResourceGroupsSpec::from_json("{").is_err());
    assert!(error(json!({"rootGroups": [], "selectors": []})).starts_with("rootGroups: must define"));
}

#[test]
fn every_value_rule_has_its_own_error() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/rootGroups/1/subGroups",
            json!([{"name": "x", "softMemoryLimit": "1GB", "maxQueued": 1, "hardConcurrencyLimit": -1}]),
            "rootGroups[1].subGroups[0].hardConcurrencyLimit: must be >= 0",
        ),
        ("/rootGroups/0/maxQueued", json!(-3), "rootGroups[0].maxQueued: must be >= 0"),
        (
            "/rootGroups/0/softConcurrencyLimit",
            json!(11),
            "rootGroups[0].softConcurrencyLimit: must be <= hardConcurrencyLimit (10)",
        ),
        ("/rootGroups/0/softConcurrencyLimit", json!(-1), "rootGroups[0].softConcurrencyLimit: must be >= 0"),
        ("/rootGroups/0/maxRunning", json!(4), "rootGroups[0].maxRunning: is the old name"),
        ("/rootGroups/0/softMemoryLimit", json!("lots"), "rootGroups[0].softMemoryLimit: 'lots' is not a data size"),
        ("/rootGroups/0/softMemoryLimit", json!("150%"), "rootGroups[0].softMemoryLimit: '150%' is more than 100%"),
        (
            "/rootGroups/0/schedulingPolicy",
            json!("round_robin"),
            "rootGroups[0].schedulingPolicy: unknown policy 'round_robin'",
        ),
        (
            "/rootGroups/0/subGroups/0/name",
            json!("etl"),
            "rootGroups[0].subGroups[1].name: duplicate group name 'etl' (also rootGroups[0].subGroups[0])",
        ),
        ("/rootGroups/1/name", json!("global"), "rootGroups[1].name: duplicate group name 'global'"),
        ("/rootGroups/1/name", json!("a.b"), "rootGroups[1].name: group name 'a.b' contains a '.'"),
        ("/rootGroups/1/name", json!("x-${"), "rootGroups[1].name: group name 'x-${' has a '$'"),
        ("/rootGroups/1/softCpuLimit", json!("1h"), "rootGroups[1].softCpuLimit: CPU limits need cpuQuotaPeriod"),
        ("/rootGroups/1/hardCpuLimit", json!("1h"), "rootGroups[1].hardCpuLimit: CPU limits need cpuQuotaPeriod"),
        ("/cpuQuotaPeriod", json!("0s"), "cpuQuotaPeriod: must be greater than zero"),
        ("/cpuQuotaPeriod", json!("soon"), "cpuQuotaPeriod: 'soon' is not a duration"),
        (
            "/selectors/0/group",
            json!("global.adhocc"),
            "selectors[0].group: 'global.adhocc' is not a group defined in rootGroups",
        ),
        ("/selectors/0/group", json!("global"), "selectors[0].group: 'global' has sub-groups"),
        ("/selectors/0/group", json!("global..adhoc"), "selectors[0].group: group name is empty"),
        ("/selectors/0/user", json!("(unclosed"), "selectors[0].user: invalid regular expression"),
        ("/selectors/0/queryType", json!("SELEKT"), "selectors[0].queryType: unknown query type 'SELEKT'"),
        ("/selectors/0/selectorResourceEstimate", json!({}), "selectors[0].selectorResourceEstimate: is not supported"),
    ];
    for (pointer, value, expected) in cases {
        let mut doc = base();
        if pointer == "/cpuQuotaPeriod" {
            doc["cpuQuotaPeriod"] = value;
        } else {
            let (parent, key) = pointer.rsplit_once('/').expect("pointer with a key");
            let target = doc.pointer_mut(parent).expect("pointer into base()");
            target[key] = value;
        }
        let e = error(doc);
        assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
    }
}

#[test]
fn cpu_and_weight_rules_follow_trino() {
    let mut doc = base();
    doc["cpuQuotaPeriod"] = json!("1h");
    doc["rootGroups"][1]["softCpuLimit"] = json!("10m");
    assert_eq!(error(doc.clone()), "rootGroups[1].softCpuLimit: needs hardCpuLimit as well");
    doc["rootGroups"][1]["hardCpuLimit"] = json!("5m");
    assert_eq!(error(doc.clone()), "rootGroups[1].softCpuLimit: must be <= hardCpuLimit");
    doc["rootGroups"][1]["hardCpuLimit"] = json!("20m");
    assert!(parse(&doc).is_ok());

    let mut doc = base();
    doc["rootGroups"][0]["schedulingPolicy"] = json!("weighted");
    doc["rootGroups"][0]["subGroups"][0]["schedulingWeight"] = json!(3);
    assert!(error(doc.clone()).starts_with("rootGroups[0].subGroups: give a schedulingWeight to every sub-group"));
    doc["rootGroups"][0]["subGroups"][1]["schedulingWeight"] = json!(0);
    assert!(error(doc.clone()).starts_with("rootGroups[0].subGroups[1].schedulingWeight: must be between 1"));
    doc["rootGroups"][0]["subGroups"][1]["schedulingWeight"] = json!(1);
    assert!(parse(&doc).is_ok());
    doc["rootGroups"][0]["schedulingPolicy"] = json!("fair");
    assert!(error(doc).starts_with("rootGroups[0].subGroups: schedulingWeight is only used under a weighted"));

    let mut doc = base();
    doc["rootGroups"][0]["schedulingPolicy"] = json!("query_priority");
    doc["rootGroups"][0]["subGroups"][0]["schedulingPolicy"] = json!("fair");
    assert!(
        error(doc.clone()).starts_with("rootGroups[0].subGroups[0].schedulingPolicy: the parent uses query_priority")
    );
    doc["rootGroups"][0]["subGroups"][0]["schedulingPolicy"] = json!("query_priority");
    let spec = parse(&doc).expect("valid");
    // The sub-group that says nothing inherits query_priority.
    assert_eq!(spec.root_groups()[0].sub_groups[1].scheduling_policy, SchedulingPolicy::QueryPriority);
}

#[test]
fn selector_variables_must_be_defined_once() {
    let mut doc = base();
    doc["rootGroups"][0]["subGroups"][0]["subGroups"] =
        json!([{"name": "${tool}", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}]);
    doc["selectors"] = json!([{"group": "global.adhoc.${tool}"}]);
    let e = error(doc.clone());
    assert!(e.starts_with("selectors[0].group: unknown variable ${tool} (available: USER, SOURCE)"), "{e}");
    doc["selectors"] = json!([{"source": "(?<tool>.*)", "user": "(?<tool>.*)", "group": "global.adhoc.${tool}"}]);
    assert!(error(doc.clone()).starts_with("selectors[0].source: variable ${tool} is defined more than once"));
    doc["selectors"] = json!([{"source": "(?<tool>.*)", "group": "global.adhoc.${tool}"}]);
    assert!(parse(&doc).is_ok());
}

#[test]
fn from_file_names_the_file() {
    let dir = std::env::temp_dir().join(format!("quiver-rg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.json");
    std::fs::write(&path, r#"{"rootGroups": [], "selectors": []}"#).expect("write");
    let e = ResourceGroupsSpec::from_file(&path).expect_err("empty rootGroups").to_string();
    assert!(e.contains("bad.json") && e.contains("rootGroups: must define"), "{e}");
    let missing = ResourceGroupsSpec::from_file(&dir.join("missing.json")).expect_err("missing").to_string();
    assert!(missing.contains("missing.json"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(GroupId::from_dotted("global").is_some());
}
