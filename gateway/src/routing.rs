//! Routing rules: which pool runs a statement.
//!
//! Rules are tried in order; the first whose every condition holds names the pool (or a
//! weighted split between pools, for blue/green and canary roll-outs). Conditions look at the
//! user, groups, source, client tags, query type, catalogs referenced and the resource group.
//! Without a matching rule the statement goes to `default_pool`, or else to the first pool
//! serving every catalog it names. When the chosen pool has no usable worker, `fallback_pool`
//! takes it — unless the rule is `strict`.

use std::collections::BTreeSet;

use rand::Rng;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// `[routing]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Pool for statements no rule matches. Unset: the first pool serving every catalog.
    pub default_pool: Option<String>,
    /// Pool that takes statements whose chosen pool has no usable worker.
    pub fallback_pool: Option<String>,
    /// `[[routing.rules]]`, in order.
    pub rules: Vec<RoutingRule>,
}

/// One `[[routing.rules]]` entry. Regexes match whole values; an empty list is no condition.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingRule {
    /// Name for logs and the query list.
    pub name: String,
    /// User regexes (any matches).
    pub users: Vec<String>,
    /// Group regexes (any of the user's groups matches any).
    pub groups: Vec<String>,
    /// Source regexes (`x-quiver-source` / session option `source`).
    pub sources: Vec<String>,
    /// Client tags that must all be present.
    pub client_tags: Vec<String>,
    /// Trino query types (SELECT, INSERT, DATA_DEFINITION, ...), any.
    pub query_types: Vec<String>,
    /// Catalogs: the statement references at least one of them.
    pub catalogs: Vec<String>,
    /// Resource-group regexes on the dotted group id (e.g. `global\.pipeline\..*`).
    pub resource_groups: Vec<String>,
    /// The target pool (or use `split`).
    pub pool: Option<String>,
    /// Weighted targets: `[{ pool = "blue", weight = 90 }, { pool = "green", weight = 10 }]`.
    pub split: Vec<WeightedPool>,
    /// No fallback: if the target has no usable worker, the statement fails (UNAVAILABLE).
    pub strict: bool,
}

/// One arm of a weighted split.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedPool {
    /// Pool name.
    pub pool: String,
    /// Relative weight (> 0).
    pub weight: u32,
}

/// What rules look at.
#[derive(Debug, Clone)]
pub struct RouteRequest<'a> {
    /// User.
    pub user: &'a str,
    /// Groups.
    pub groups: &'a [String],
    /// Source.
    pub source: Option<&'a str>,
    /// Client tags.
    pub client_tags: &'a [String],
    /// Trino query type.
    pub query_type: &'a str,
    /// Catalogs referenced.
    pub catalogs: &'a BTreeSet<String>,
    /// The resource group the selectors chose (dotted), if resource groups are configured.
    pub resource_group: Option<&'a str>,
}

/// A rule's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChoice {
    /// The pool.
    pub pool: String,
    /// The rule that chose it (`default` when none did).
    pub rule: String,
    /// Whether falling back to `fallback_pool` is forbidden.
    pub strict: bool,
}

#[derive(Debug, Clone)]
struct Compiled {
    rule: RoutingRule,
    users: Vec<Regex>,
    groups: Vec<Regex>,
    sources: Vec<Regex>,
    resource_groups: Vec<Regex>,
    total_weight: u64,
}

/// Compiled rules.
#[derive(Debug, Clone, Default)]
pub struct RoutingRules {
    rules: Vec<Compiled>,
    default_pool: Option<String>,
    fallback_pool: Option<String>,
}

fn anchored(patterns: &[String], key: &str) -> Result<Vec<Regex>, String> {
    patterns.iter().map(|p| Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("{key} `{p}`: {e}"))).collect()
}

impl RoutingConfig {
    /// Every problem, as (key, reason), given the configured pool names.
    pub fn validate(&self, pools: &[String]) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let known = |p: &str| pools.iter().any(|n| n == p);
        for (key, pool) in
            [("routing.default_pool", &self.default_pool), ("routing.fallback_pool", &self.fallback_pool)]
        {
            if let Some(p) = pool
                && !known(p)
            {
                problems.push((key.to_string(), format!("no pool named `{p}`")));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let key = format!("routing.rules[{i}]");
            if let Err(e) = RoutingRules::compile(rule) {
                problems.push((key.clone(), e));
            }
            match (&rule.pool, rule.split.is_empty()) {
                (Some(_), false) | (None, true) => {
                    problems.push((key.clone(), "set exactly one of `pool` and `split`".into()))
                }
                _ => {}
            }
            for p in rule.pool.iter().chain(rule.split.iter().map(|w| &w.pool)) {
                if !known(p) {
                    problems.push((key.clone(), format!("no pool named `{p}`")));
                }
            }
            if rule.split.iter().any(|w| w.weight == 0) {
                problems.push((format!("{key}.split"), "weights must be at least 1".into()));
            }
            for t in &rule.query_types {
                if quiver_policies::QueryType::from_trino_name(t).is_none() {
                    problems.push((format!("{key}.query_types"), format!("`{t}` is not a Trino query type")));
                }
            }
        }
        problems
    }
}

impl RoutingRules {
    fn compile(rule: &RoutingRule) -> Result<Compiled, String> {
        Ok(Compiled {
            users: anchored(&rule.users, "users")?,
            groups: anchored(&rule.groups, "groups")?,
            sources: anchored(&rule.sources, "sources")?,
            resource_groups: anchored(&rule.resource_groups, "resource_groups")?,
            total_weight: rule.split.iter().map(|w| u64::from(w.weight)).sum(),
            rule: rule.clone(),
        })
    }

    /// Compiles `config` (validated beforehand).
    pub fn new(config: &RoutingConfig) -> Result<Self, String> {
        Ok(RoutingRules {
            rules: config.rules.iter().map(Self::compile).collect::<Result<_, _>>()?,
            default_pool: config.default_pool.clone(),
            fallback_pool: config.fallback_pool.clone(),
        })
    }

    /// The pool that takes statements whose chosen pool has no usable worker.
    pub fn fallback_pool(&self) -> Option<&str> {
        self.fallback_pool.as_deref()
    }

    /// The first matching rule's pool, else the default pool; `None` leaves the choice to
    /// catalog-based routing. `serves(pool)` tells whether a pool serves every catalog the
    /// statement names: a rule whose pool does not is skipped.
    pub fn choose(&self, request: &RouteRequest<'_>, serves: impl Fn(&str) -> bool) -> Option<RouteChoice> {
        for c in &self.rules {
            if !matches(c, request) {
                continue;
            }
            let pool = match &c.rule.pool {
                Some(pool) => pool.clone(),
                None => {
                    pick_weighted(&c.rule.split, c.total_weight, rand::rng().random_range(0..c.total_weight.max(1)))
                }
            };
            if !serves(&pool) {
                tracing::debug!(rule = %c.rule.name, %pool, "routing rule skipped: its pool does not serve the catalogs");
                continue;
            }
            return Some(RouteChoice { pool, rule: c.rule.name.clone(), strict: c.rule.strict });
        }
        self.default_pool.as_ref().filter(|p| serves(p)).map(|p| RouteChoice {
            pool: p.clone(),
            rule: "default".into(),
            strict: false,
        })
    }
}

fn matches(c: &Compiled, r: &RouteRequest<'_>) -> bool {
    let any = |res: &[Regex], value: &str| res.is_empty() || res.iter().any(|re| re.is_match(value));
    any(&c.users, r.user)
        && (c.groups.is_empty() || r.groups.iter().any(|g| c.groups.iter().any(|re| re.is_match(g))))
        && (c.sources.is_empty() || r.source.is_some_and(|s| any(&c.sources, s)))
        && c.rule.client_tags.iter().all(|t| r.client_tags.contains(t))
        && (c.rule.query_types.is_empty() || c.rule.query_types.iter().any(|t| t.eq_ignore_ascii_case(r.query_type)))
        && (c.rule.catalogs.is_empty() || c.rule.catalogs.iter().any(|cat| r.catalogs.contains(cat)))
        && (c.resource_groups.is_empty() || r.resource_group.is_some_and(|g| any(&c.resource_groups, g)))
}

/// The arm of `split` that `roll` (in `0..total`) falls into.
fn pick_weighted(split: &[WeightedPool], total: u64, roll: u64) -> String {
    let mut acc = 0;
    for arm in split {
        acc += u64::from(arm.weight);
        if roll < acc {
            return arm.pool.clone();
        }
    }
    let _ = total;
    split.last().map(|a| a.pool.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, pool: &str) -> RoutingRule {
        RoutingRule { name: name.into(), pool: Some(pool.into()), ..RoutingRule::default() }
    }

    fn request<'a>(catalogs: &'a BTreeSet<String>, groups: &'a [String], tags: &'a [String]) -> RouteRequest<'a> {
        RouteRequest {
            user: "alice",
            groups,
            source: Some("superset"),
            client_tags: tags,
            query_type: "SELECT",
            catalogs,
            resource_group: Some("global.adhoc.alice"),
        }
    }

    #[test]
    fn each_condition_routes_and_the_first_match_wins() {
        let cats: BTreeSet<String> = ["tpch".to_string()].into();
        let groups = vec!["analysts".to_string()];
        let tags = vec!["dashboard".to_string(), "team-a".to_string()];
        let req = request(&cats, &groups, &tags);
        let cases: Vec<(RoutingRule, bool)> = vec![
            (RoutingRule { users: vec!["ali.*".into()], ..rule("u", "p") }, true),
            (RoutingRule { users: vec!["ali".into()], ..rule("u", "p") }, false), // whole-value match
            (RoutingRule { groups: vec!["analysts".into()], ..rule("g", "p") }, true),
            (RoutingRule { groups: vec!["engineers".into()], ..rule("g", "p") }, false),
            (RoutingRule { sources: vec!["super.*".into()], ..rule("s", "p") }, true),
            (RoutingRule { client_tags: vec!["dashboard".into()], ..rule("t", "p") }, true),
            (RoutingRule { client_tags: vec!["dashboard".into(), "etl".into()], ..rule("t", "p") }, false),
            (RoutingRule { query_types: vec!["select".into()], ..rule("q", "p") }, true),
            (RoutingRule { query_types: vec!["INSERT".into()], ..rule("q", "p") }, false),
            (RoutingRule { catalogs: vec!["tpch".into(), "lake".into()], ..rule("c", "p") }, true),
            (RoutingRule { catalogs: vec!["lake".into()], ..rule("c", "p") }, false),
            (RoutingRule { resource_groups: vec![r"global\.adhoc\..*".into()], ..rule("r", "p") }, true),
            (RoutingRule { resource_groups: vec![r"global\.pipeline\..*".into()], ..rule("r", "p") }, false),
        ];
        for (r, want) in cases {
            let rules =
                RoutingRules::new(&RoutingConfig { rules: vec![r.clone()], ..Default::default() }).expect("rules");
            assert_eq!(rules.choose(&req, |_| true).is_some(), want, "{r:?}");
        }
        let rules = RoutingRules::new(&RoutingConfig {
            rules: vec![rule("first", "a"), rule("second", "b")],
            default_pool: Some("d".into()),
            ..Default::default()
        })
        .expect("rules");
        assert_eq!(rules.choose(&req, |_| true).map(|c| c.rule), Some("first".into()));
        // A rule whose pool does not serve the catalogs is skipped.
        assert_eq!(rules.choose(&req, |p| p != "a").map(|c| c.pool), Some("b".into()));
        assert_eq!(rules.choose(&req, |p| p == "d").map(|c| c.rule), Some("default".into()));
        assert_eq!(rules.choose(&req, |_| false), None);
    }

    #[test]
    fn weighted_splits_follow_their_weights() {
        let split =
            vec![WeightedPool { pool: "blue".into(), weight: 90 }, WeightedPool { pool: "green".into(), weight: 10 }];
        assert_eq!(pick_weighted(&split, 100, 0), "blue");
        assert_eq!(pick_weighted(&split, 100, 89), "blue");
        assert_eq!(pick_weighted(&split, 100, 90), "green");
        let rules = RoutingRules::new(&RoutingConfig {
            rules: vec![RoutingRule { name: "canary".into(), split, ..RoutingRule::default() }],
            ..Default::default()
        })
        .expect("rules");
        let cats = BTreeSet::new();
        let req = request(&cats, &[], &[]);
        let green = (0..10_000).filter(|_| rules.choose(&req, |_| true).expect("choice").pool == "green").count();
        assert!((800..=1200).contains(&green), "10% ± 2% expected, got {green} of 10000");
    }

    #[test]
    fn validation_names_each_problem() {
        let config = RoutingConfig {
            default_pool: Some("nope".into()),
            rules: vec![
                RoutingRule {
                    name: "both".into(),
                    pool: Some("a".into()),
                    split: vec![WeightedPool { pool: "a".into(), weight: 0 }],
                    ..Default::default()
                },
                RoutingRule {
                    name: "bad".into(),
                    users: vec!["(".into()],
                    query_types: vec!["SELEKT".into()],
                    pool: Some("zz".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let keys: Vec<String> = config.validate(&["a".into()]).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                "routing.default_pool",
                "routing.rules[0]",
                "routing.rules[0].split",
                "routing.rules[1]",
                "routing.rules[1]",
                "routing.rules[1].query_types"
            ]
        );
    }
}
