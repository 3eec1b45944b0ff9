use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::resource_groups::{GroupState, SelectedGroup, SelectionContext};

pub(crate) fn manager(doc: Value) -> ResourceGroupManager {
    match ResourceGroupsSpec::from_json(&doc.to_string()) {
        Ok(spec) => ResourceGroupManager::new(spec),
        Err(e) => panic!("test spec invalid: {e}"),
    }
}

pub(crate) fn group(name: &str, hard: usize, max_queued: usize) -> Value {
    json!({"name": name, "softMemoryLimit": "1GB", "hardConcurrencyLimit": hard, "maxQueued": max_queued})
}

pub(crate) fn ids(names: &[&str]) -> Vec<QueryId> {
    names.iter().map(|&n| QueryId::from(n)).collect()
}

fn q(n: usize) -> QueryId {
    QueryId(format!("q{n}"))
}

#[test]
fn two_run_three_queue_five_are_refused_naming_the_group() {
    let mut m = manager(json!({"rootGroups": [group("adhoc", 2, 3)], "selectors": [{"group": "adhoc"}]}));
    let adhoc = m.select(&SelectionContext { user: "alice", ..Default::default() }).expect("selected");
    let outcomes: Vec<Admission> = (0..10).map(|i| m.submit(q(i), &adhoc, 1)).collect();
    assert_eq!(outcomes[..2], [Admission::Run, Admission::Run]);
    assert_eq!(outcomes[2..5], [Admission::Queued, Admission::Queued, Admission::Queued]);
    for outcome in &outcomes[5..] {
        let Admission::Rejected { group, reason } = outcome else { panic!("expected a rejection, got {outcome:?}") };
        assert_eq!(group.to_string(), "adhoc");
        assert_eq!(reason, "Too many queued queries for \"adhoc\" (maxQueued 3)");
    }
    let state = m.state(adhoc.id()).expect("state");
    assert_eq!((state.num_running_queries, state.num_queued_queries, state.state), (2, 3, GroupState::Full));
    assert_eq!(m.queued_queries(adhoc.id()), ids(&["q2", "q3", "q4"]));

    // Finishing releases the queued ones in arrival order, one per freed slot.
    assert_eq!(m.finish(&q(0)), ids(&["q2"]));
    assert_eq!(m.state(adhoc.id()).map(|s| s.state), Some(GroupState::CanQueue));
    assert_eq!(m.finish(&q(1)), ids(&["q3"]));
    assert_eq!(m.finish(&q(3)), ids(&["q4"]));
    assert_eq!(m.finish(&q(2)), Vec::<QueryId>::new());
    assert_eq!(m.running_queries(adhoc.id()), ids(&["q4"]));
    assert_eq!(m.submit(q(10), &adhoc, 1), Admission::Run);
    assert_eq!(m.submit(q(11), &adhoc, 1), Admission::Queued);
    // Unknown ids and repeats change nothing.
    assert_eq!(m.finish(&q(99)), Vec::<QueryId>::new());
    assert!(
        matches!(m.submit(q(11), &adhoc, 1), Admission::Rejected { reason, .. } if reason.contains("already submitted"))
    );
}

#[test]
fn parent_limits_hold_across_sub_groups() {
    let mut root = group("root", 3, 1);
    root["subGroups"] = json!([group("a", 2, 10), group("b", 2, 10)]);
    let mut m = manager(json!({"rootGroups": [root]}));
    let (a, b) = (SelectedGroup::literal("root.a"), SelectedGroup::literal("root.b"));
    assert_eq!(m.submit(q(1), &a, 1), Admission::Run);
    assert_eq!(m.submit(q(2), &a, 1), Admission::Run);
    assert_eq!(m.submit(q(3), &b, 1), Admission::Run);
    // b is under its own limit, but root runs 3 of 3: queue (root allows 1 queued).
    assert_eq!(m.submit(q(4), &b, 1), Admission::Queued);
    let Admission::Rejected { group, reason } = m.submit(q(5), &b, 1) else { panic!("root queue is full") };
    assert_eq!(group.to_string(), "root.b");
    assert_eq!(reason, "Too many queued queries for \"root.b\" (group \"root\" holds its maxQueued of 1)");
    let root_state = m.state(&GroupId::from_dotted("root").expect("id")).expect("root exists");
    assert_eq!((root_state.num_running_queries, root_state.num_queued_queries), (3, 1));
    let subs = root_state.sub_groups.expect("sub-groups listed");
    assert_eq!(
        subs.iter().map(|s| (s.id.to_string(), s.state)).collect::<Vec<_>>(),
        [("root.a".to_string(), GroupState::CanQueue), ("root.b".to_string(), GroupState::CanRun)]
    );
    // A slot freed in a lets b's queued query start (the limit was root's).
    assert_eq!(m.finish(&q(1)), ids(&["q4"]));
    // A queued query that is cancelled leaves its queue and the counts.
    assert_eq!(m.submit(q(6), &a, 1), Admission::Queued);
    assert!(m.cancel_queued(&q(6)));
    assert!(!m.cancel_queued(&q(6)));
    assert!(!m.cancel_queued(&q(2)), "running queries are not cancelled from the queue");
    assert_eq!(m.state(a.id()).map(|s| s.num_queued_queries), Some(0));
    assert_eq!(m.finish(&q(2)), Vec::<QueryId>::new());
}

#[test]
fn cpu_usage_cuts_concurrency_and_the_quota_comes_back_over_time() {
    let mut g = group("etl", 4, 10);
    g["softCpuLimit"] = json!("10s");
    g["hardCpuLimit"] = json!("20s");
    let mut m = manager(json!({"cpuQuotaPeriod": "1m", "rootGroups": [g]}));
    let etl = SelectedGroup::literal("etl");
    m.add_cpu_usage(etl.id(), Duration::from_secs(15));
    // Half-way from soft to hard: the limit of 4 halves to 2.
    assert_eq!(m.state(etl.id()).map(|s| s.hard_concurrency_limit), Some(2));
    assert_eq!(m.submit(q(1), &etl, 1), Admission::Run);
    assert_eq!(m.submit(q(2), &etl, 1), Admission::Run);
    assert_eq!(m.submit(q(3), &etl, 1), Admission::Queued);
    assert!(m.add_query_cpu_usage(&q(1), Duration::from_secs(5)));
    // At the hard CPU limit nothing starts, even when a slot frees.
    assert_eq!(m.finish(&q(1)), Vec::<QueryId>::new());
    assert_eq!(m.state(etl.id()).map(|s| (s.state, s.cpu_usage)), Some((GroupState::CanQueue, "20000.00ms".into())));
    // 30 s of a 1 min period earn back half of the 20 s hard limit: 10 s, at the soft limit.
    assert_eq!(m.tick(Duration::from_secs(30)), ids(&["q3"]));
    assert_eq!(m.state(etl.id()).map(|s| s.hard_concurrency_limit), Some(3));
    assert_eq!(m.tick(Duration::from_secs(60)), Vec::<QueryId>::new());
    assert_eq!(m.state(etl.id()).map(|s| (s.hard_concurrency_limit, s.cpu_usage)), Some((4, "0.00ms".into())));
}

#[test]
fn cpu_usage_counts_at_every_level() {
    let mut root = group("root", 2, 10);
    root["softCpuLimit"] = json!("1m");
    root["hardCpuLimit"] = json!("1m");
    root["subGroups"] = json!([group("a", 2, 10), group("b", 2, 10)]);
    let mut m = manager(json!({"cpuQuotaPeriod": "1h", "rootGroups": [root]}));
    let (a, b) = (SelectedGroup::literal("root.a"), SelectedGroup::literal("root.b"));
    m.add_cpu_usage(a.id(), Duration::from_secs(60));
    // a's CPU time counts against root, which stops b as well.
    assert_eq!(m.submit(q(1), &b, 1), Admission::Queued);
    assert_eq!(m.tick(Duration::from_secs(60)), ids(&["q1"]));
    assert_eq!(m.submit(q(2), &a, 1), Admission::Run);
}

#[test]
fn reload_keeps_running_queries_and_applies_new_limits() {
    let spec = |hard: usize, with_b: bool| {
        let mut root = group("root", 10, 10);
        let mut subs = vec![group("a", hard, 10)];
        if with_b {
            subs.push(group("b", 1, 10));
        }
        root["subGroups"] = json!(subs);
        ResourceGroupsSpec::from_json(&json!({"rootGroups": [root]}).to_string()).expect("valid")
    };
    let mut m = ResourceGroupManager::new(spec(1, true));
    let (a, b) = (SelectedGroup::literal("root.a"), SelectedGroup::literal("root.b"));
    assert_eq!(m.submit(q(1), &a, 1), Admission::Run);
    assert_eq!(m.submit(q(2), &a, 1), Admission::Queued);
    assert_eq!(m.submit(q(3), &a, 1), Admission::Queued);
    assert_eq!(m.submit(q(4), &b, 1), Admission::Run);
    assert_eq!(m.submit(q(5), &b, 1), Admission::Queued);

    // a's limit rises to 2 (one queued query starts); b disappears from the file.
    assert_eq!(m.reload(spec(2, false)), ids(&["q2"]));
    assert_eq!(m.state(a.id()).map(|s| (s.hard_concurrency_limit, s.num_running_queries)), Some((2, 2)));
    // b keeps its running and queued queries under its last limits, and takes no new ones.
    assert_eq!(m.state(b.id()).map(|s| (s.num_running_queries, s.num_queued_queries)), Some((1, 1)));
    assert!(
        matches!(m.submit(q(6), &b, 1), Admission::Rejected { reason, .. } if reason.contains("no longer configured"))
    );
    assert_eq!(m.finish(&q(4)), ids(&["q5"]));
    assert_eq!(m.finish(&q(5)), Vec::<QueryId>::new());
    assert!(m.state(b.id()).is_none(), "a removed group goes away once empty");
    assert!(m.state(a.id()).is_some(), "configured groups stay");
    assert_eq!(m.finish(&q(1)), ids(&["q3"]));
}

#[test]
fn templated_groups_come_and_go_with_their_queries() {
    let mut m = manager(json!({
        "rootGroups": [{"name": "global", "softMemoryLimit": "50%", "hardConcurrencyLimit": 10, "maxQueued": 10,
                        "subGroups": [group("${USER}", 1, 1), group("bob", 1, 1)]}],
        "selectors": [{"group": "global.${USER}"}]
    }));
    assert_eq!(m.group_ids().iter().map(ToString::to_string).collect::<Vec<_>>(), ["global", "global.bob"]);
    let alice = m.select(&SelectionContext { user: "alice", ..Default::default() }).expect("selected");
    assert_eq!(m.submit(q(1), &alice, 1), Admission::Run);
    assert_eq!(alice.id().to_string(), "global.alice");
    assert_eq!(m.group_of(&q(1)).map(ToString::to_string).as_deref(), Some("global.alice"));
    // Memory: the smallest limit on the path; a percentage counts once the cluster size is known.
    assert_eq!(m.soft_memory_limit_bytes(alice.id()), Some(1 << 30));
    m.set_cluster_memory_bytes(1 << 30);
    assert_eq!(m.soft_memory_limit_bytes(alice.id()), Some(1 << 29));
    assert_eq!(m.finish(&q(1)), Vec::<QueryId>::new());
    assert!(m.state(alice.id()).is_none(), "idle templated group is dropped");
    // `${USER}` for bob collides with the literal group `bob`: refused rather than merged.
    let bob = m.select(&SelectionContext { user: "bob", ..Default::default() }).expect("selected");
    let Admission::Rejected { reason, .. } = m.submit(q(2), &bob, 1) else { panic!("ambiguous group") };
    assert_eq!(reason, "group \"global.bob\" is configured both as 'bob' and as '${USER}'");
}

#[test]
fn state_has_trinos_json_shape() {
    let mut root = group("global", 5, 100);
    root["schedulingPolicy"] = json!("weighted_fair");
    root["subGroups"] = json!([group("adhoc", 1, 10)]);
    let mut m = manager(json!({"rootGroups": [root]}));
    let adhoc = SelectedGroup::literal("global.adhoc");
    assert_eq!(m.submit(q(1), &adhoc, 1), Admission::Run);
    assert_eq!(m.submit(q(2), &adhoc, 1), Admission::Queued);
    let state = m.state(&GroupId::from_dotted("global").expect("id")).expect("exists");
    let summary = json!({
        "id": ["global", "adhoc"], "state": "CAN_QUEUE", "schedulingPolicy": "FAIR", "schedulingWeight": 1,
        "softMemoryLimit": "1GB", "softConcurrencyLimit": 1, "hardConcurrencyLimit": 1, "maxQueuedQueries": 10,
        "memoryUsage": "0B", "cpuUsage": "0.00ms", "numQueuedQueries": 1, "numRunningQueries": 1,
        "numEligibleSubGroups": 0
    });
    assert_eq!(
        serde_json::to_value(&state).expect("serializes"),
        json!({
            "id": ["global"], "state": "CAN_RUN", "schedulingPolicy": "WEIGHTED_FAIR", "schedulingWeight": 1,
            "softMemoryLimit": "1GB", "softConcurrencyLimit": 5, "hardConcurrencyLimit": 5, "maxQueuedQueries": 100,
            "memoryUsage": "0B", "cpuUsage": "0.00ms", "numQueuedQueries": 1, "numRunningQueries": 1,
            "numEligibleSubGroups": 0, "subGroups": [summary]
        })
    );
    assert!(m.state(&GroupId::from_dotted("nope").expect("id")).is_none());
}
