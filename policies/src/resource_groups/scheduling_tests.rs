use serde_json::{Value, json};

use crate::resource_groups::manager::tests::{group, ids, manager};
use crate::resource_groups::{Admission, QueryId, ResourceGroupManager, SelectedGroup};

/// A root group `root` with `policy`, room for `hard` running queries, and the given sub-groups.
fn tree(policy: &str, hard: usize, subs: Vec<Value>) -> ResourceGroupManager {
    let mut root = group("root", hard, 100);
    root["schedulingPolicy"] = json!(policy);
    root["subGroups"] = json!(subs);
    manager(json!({"rootGroups": [root]}))
}

fn weighted(name: &str, weight: u32) -> Value {
    let mut g = group(name, 100, 100);
    g["schedulingWeight"] = json!(weight);
    g
}

/// Submits `(query, leaf, priority)` in order; each must be admitted as `expect`.
fn submit_all(m: &mut ResourceGroupManager, queries: &[(&str, &str, i32)], expect: Admission) {
    for &(query, leaf, priority) in queries {
        let admission = m.submit(QueryId::from(query), &SelectedGroup::literal(&format!("root.{leaf}")), priority);
        assert_eq!(admission, expect, "{query}");
    }
}

/// Finishes running queries one at a time (oldest started first) and records what starts.
fn drain(m: &mut ResourceGroupManager, mut running: Vec<QueryId>) -> Vec<String> {
    let mut order = Vec::new();
    while !running.is_empty() {
        let done = running.remove(0);
        for started in m.finish(&done) {
            order.push(started.0.clone());
            running.push(started);
        }
    }
    order
}

#[test]
fn fair_takes_turns_between_sub_groups_fifo_within() {
    let mut m = tree("fair", 1, vec![group("a", 10, 10), group("b", 10, 10), group("c", 10, 10)]);
    submit_all(&mut m, &[("a0", "a", 1)], Admission::Run);
    submit_all(
        &mut m,
        &[("a1", "a", 1), ("a2", "a", 9), ("b1", "b", 1), ("c1", "c", 1), ("b2", "b", 1), ("a3", "a", 1)],
        Admission::Queued,
    );
    // Round robin a, b, c in the order they got queued work; FIFO (priority ignored) within a.
    assert_eq!(drain(&mut m, ids(&["a0"])), ["a1", "b1", "c1", "a2", "b2", "a3"]);
}

#[test]
fn query_priority_is_strict_across_the_tree_then_fifo() {
    let mut m = tree("query_priority", 1, vec![group("a", 10, 10), group("b", 10, 10)]);
    submit_all(&mut m, &[("first", "a", 1)], Admission::Run);
    submit_all(
        &mut m,
        &[("a-low", "a", 1), ("b-high", "b", 5), ("a-high", "a", 5), ("b-low", "b", 1), ("a-mid", "a", 3)],
        Admission::Queued,
    );
    assert_eq!(drain(&mut m, ids(&["first"])), ["b-high", "a-high", "a-mid", "a-low", "b-low"]);
}

#[test]
fn weighted_starts_queries_in_proportion_to_weight() {
    let mut m = tree("weighted", 1, vec![weighted("a", 3), weighted("b", 1)]);
    submit_all(&mut m, &[("x", "a", 1)], Admission::Run);
    let queued: Vec<(String, &str)> = (0..8).flat_map(|i| [(format!("a{i}"), "a"), (format!("b{i}"), "b")]).collect();
    for (query, leaf) in &queued {
        assert_eq!(
            m.submit(QueryId(query.clone()), &SelectedGroup::literal(&format!("root.{leaf}")), 1),
            Admission::Queued
        );
    }
    let order = drain(&mut m, ids(&["x"]));
    // Every window of 4 starts holds 3 from a and 1 from b while both have queued queries.
    assert_eq!(order[..8], ["a0", "b0", "a1", "a2", "a3", "b1", "a4", "a5"]);
    let first_eight_from_a = order[..8].iter().filter(|q| q.starts_with('a')).count();
    assert_eq!(first_eight_from_a, 6);
    assert_eq!(order.len(), 16);
}

#[test]
fn weighted_fair_balances_running_queries_by_weight() {
    let mut m = tree("weighted_fair", 4, vec![weighted("a", 3), weighted("b", 1)]);
    submit_all(&mut m, &[("a1", "a", 1), ("a2", "a", 1), ("a3", "a", 1), ("a4", "a", 1)], Admission::Run);
    submit_all(
        &mut m,
        &[("b1", "b", 1), ("b2", "b", 1), ("b3", "b", 1), ("a5", "a", 1), ("a6", "a", 1), ("a7", "a", 1)],
        Admission::Queued,
    );
    // a runs 4 of 4; its share is 3 of 4: b starts first, then the 3:1 split is kept.
    assert_eq!(m.finish(&QueryId::from("a1")), ids(&["b1"]));
    assert_eq!(m.finish(&QueryId::from("a2")), ids(&["a5"]));
    assert_eq!(m.finish(&QueryId::from("a3")), ids(&["a6"]));
    assert_eq!(m.finish(&QueryId::from("b1")), ids(&["b2"]));
    assert_eq!(m.finish(&QueryId::from("b2")), ids(&["b3"]));
    assert_eq!(m.finish(&QueryId::from("a4")), ids(&["a7"]));
}

#[test]
fn groups_past_their_soft_limit_yield_to_peers_below_theirs() {
    let mut a = group("a", 3, 10);
    a["softConcurrencyLimit"] = json!(1);
    let mut m = tree("fair", 3, vec![a, group("b", 3, 10)]);
    submit_all(&mut m, &[("a1", "a", 1), ("a2", "a", 1), ("a3", "a", 1)], Admission::Run);
    submit_all(&mut m, &[("a4", "a", 1), ("b1", "b", 1), ("a5", "a", 1), ("b2", "b", 1)], Admission::Queued);
    // a queued first, but runs at or past its soft limit of 1 while b is below its own.
    assert_eq!(m.finish(&QueryId::from("a1")), ids(&["b1"]));
    assert_eq!(m.finish(&QueryId::from("a2")), ids(&["b2"]));
    // Nothing left in b: a starts even past its soft limit.
    assert_eq!(m.finish(&QueryId::from("b1")), ids(&["a4"]));
}

#[test]
fn leaf_queues_order_by_priority_except_under_fair() {
    for (policy, expected) in [
        ("fair", ["p1", "p5", "p3"]),
        ("weighted", ["p5", "p3", "p1"]),
        ("weighted_fair", ["p5", "p3", "p1"]),
        ("query_priority", ["p5", "p3", "p1"]),
    ] {
        let mut leaf = group("root", 1, 10);
        leaf["schedulingPolicy"] = json!(policy);
        let mut m = manager(json!({"rootGroups": [leaf]}));
        let root = SelectedGroup::literal("root");
        assert_eq!(m.submit(QueryId::from("p0"), &root, 1), Admission::Run);
        for (q, p) in [("p1", 1), ("p5", 5), ("p3", 3)] {
            assert_eq!(m.submit(QueryId::from(q), &root, p), Admission::Queued);
        }
        assert_eq!(drain(&mut m, ids(&["p0"])), expected, "{policy}");
    }
}
