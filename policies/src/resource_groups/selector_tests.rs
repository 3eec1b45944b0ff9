use serde_json::json;

use super::*;

/// A spec whose leaf groups are literal or templated, with the given selectors.
fn spec(selectors: serde_json::Value) -> ResourceGroupsSpec {
    let group = |name: &str| json!({"name": name, "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1});
    let mut src = group("src-${SOURCE}");
    src["subGroups"] = json!([group("${USER}")]);
    let mut bi = group("bi-${tool}");
    bi["subGroups"] = json!([group("${USER}")]);
    let mut root = group("root");
    root["subGroups"] = json!([group("a"), group("b"), group("c"), group("${USER}"), src, bi]);
    let doc = json!({"rootGroups": [root], "selectors": selectors});
    match ResourceGroupsSpec::from_json(&doc.to_string()) {
        Ok(spec) => spec,
        Err(e) => panic!("test spec invalid: {e}"),
    }
}

fn pick(spec: &ResourceGroupsSpec, ctx: SelectionContext) -> Option<String> {
    spec.select(&ctx).map(|s| s.id().to_string())
}

#[test]
fn user_regex_must_match_the_whole_name() {
    let s = spec(json!([{"user": "alice", "group": "root.a"}, {"user": "al.*", "group": "root.b"}]));
    assert_eq!(pick(&s, SelectionContext { user: "alice", ..Default::default() }).as_deref(), Some("root.a"));
    assert_eq!(pick(&s, SelectionContext { user: "alice2", ..Default::default() }).as_deref(), Some("root.b"));
    assert_eq!(pick(&s, SelectionContext { user: "malice", ..Default::default() }), None);
}

#[test]
fn original_and_authenticated_user_match_the_user() {
    let s =
        spec(json!([{"originalUser": "bob", "group": "root.a"}, {"authenticatedUser": "carol", "group": "root.b"}]));
    assert_eq!(pick(&s, SelectionContext { user: "bob", ..Default::default() }).as_deref(), Some("root.a"));
    assert_eq!(pick(&s, SelectionContext { user: "carol", ..Default::default() }).as_deref(), Some("root.b"));
}

#[test]
fn user_group_matches_any_of_the_users_groups() {
    let s = spec(json!([{"userGroup": "data-.*", "group": "root.a"}]));
    let groups = vec!["staff".to_string(), "data-eng".to_string()];
    assert_eq!(
        pick(&s, SelectionContext { user: "u", groups: &groups, ..Default::default() }).as_deref(),
        Some("root.a")
    );
    let other = vec!["staff".to_string()];
    assert_eq!(pick(&s, SelectionContext { user: "u", groups: &other, ..Default::default() }), None);
    assert_eq!(pick(&s, SelectionContext { user: "u", ..Default::default() }), None);
}

#[test]
fn source_needs_a_source_that_matches() {
    let s = spec(json!([{"source": ".*airflow.*", "group": "root.a"}, {"group": "root.b"}]));
    assert_eq!(
        pick(&s, SelectionContext { user: "u", source: Some("my-airflow"), ..Default::default() }).as_deref(),
        Some("root.a")
    );
    assert_eq!(
        pick(&s, SelectionContext { user: "u", source: Some("cli"), ..Default::default() }).as_deref(),
        Some("root.b")
    );
    assert_eq!(pick(&s, SelectionContext { user: "u", source: None, ..Default::default() }).as_deref(), Some("root.b"));
}

#[test]
fn query_type_matches_trino_names_in_any_case() {
    let s = spec(json!([
        {"queryType": "data_definition", "group": "root.a"},
        {"queryType": "ALTER_TABLE_EXECUTE", "group": "root.c"},
        {"queryType": "SELECT", "group": "root.b"}
    ]));
    let ctx = |t| SelectionContext { user: "u", query_type: Some(t), ..Default::default() };
    assert_eq!(pick(&s, ctx(QueryType::DataDefinition)).as_deref(), Some("root.a"));
    assert_eq!(pick(&s, ctx(QueryType::Select)).as_deref(), Some("root.b"));
    assert_eq!(pick(&s, ctx(QueryType::Insert)), None);
    assert_eq!(pick(&s, SelectionContext { user: "u", ..Default::default() }), None);
}

#[test]
fn client_tags_must_all_be_present() {
    let s = spec(json!([{"clientTags": ["hipri", "etl"], "group": "root.a"}]));
    let both = vec!["etl".to_string(), "x".to_string(), "hipri".to_string()];
    let one = vec!["hipri".to_string()];
    assert_eq!(
        pick(&s, SelectionContext { user: "u", client_tags: &both, ..Default::default() }).as_deref(),
        Some("root.a")
    );
    assert_eq!(pick(&s, SelectionContext { user: "u", client_tags: &one, ..Default::default() }), None);
}

#[test]
fn all_rules_of_a_selector_must_hold_and_the_first_match_wins() {
    let s = spec(json!([
        {"user": "alice", "source": "cli", "group": "root.a"},
        {"user": "alice", "group": "root.b"},
        {"group": "root.c"}
    ]));
    assert_eq!(
        pick(&s, SelectionContext { user: "alice", source: Some("cli"), ..Default::default() }).as_deref(),
        Some("root.a")
    );
    assert_eq!(
        pick(&s, SelectionContext { user: "alice", source: Some("jdbc"), ..Default::default() }).as_deref(),
        Some("root.b")
    );
    assert_eq!(
        pick(&s, SelectionContext { user: "bob", source: Some("cli"), ..Default::default() }).as_deref(),
        Some("root.c")
    );
}

#[test]
fn templates_expand_user_source_and_named_captures() {
    let s = spec(json!([
        {"source": "(?<tool>tableau|superset)-.*", "group": "root.bi-${tool}.${USER}"},
        {"source": "jdbc", "group": "root.src-${SOURCE}.${USER}"},
        {"user": ".*", "group": "root.${USER}"}
    ]));
    let bi = s.select(&SelectionContext { user: "kayla", source: Some("superset-prod"), ..Default::default() });
    let bi = bi.expect("selected");
    assert_eq!(bi.id().segments(), ["root", "bi-superset", "kayla"]);
    assert_eq!(bi.template().iter().map(|t| t.as_str()).collect::<Vec<_>>(), ["root", "bi-${tool}", "${USER}"]);
    assert_eq!(
        pick(&s, SelectionContext { user: "ann", source: Some("jdbc"), ..Default::default() }).as_deref(),
        Some("root.src-jdbc.ann")
    );
    assert_eq!(pick(&s, SelectionContext { user: "zed", ..Default::default() }).as_deref(), Some("root.zed"));
}

#[test]
fn an_empty_expansion_falls_through_to_the_next_selector() {
    let s = spec(json!([{"user": "(?<tool>x?)", "group": "root.bi-${tool}.${USER}"}, {"group": "root.${USER}"}]));
    // `bi-${tool}` is never empty; `${USER}` expands to "" only for an empty user name.
    assert_eq!(pick(&s, SelectionContext { user: "", ..Default::default() }), None);
    assert_eq!(pick(&s, SelectionContext { user: "x", ..Default::default() }).as_deref(), Some("root.bi-x.x"));
}
