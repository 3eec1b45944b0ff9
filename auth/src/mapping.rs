//! User mapping: turns the principal a method established (`alice@EXAMPLE.COM`, a certificate
//! CN, an LDAP login) into the user name policies see, as Trino's `user-mapping` rules do.
//!
//! Rules are tried in order; the first whose `pattern` matches the *whole* principal decides.
//! It either maps (the `user` template, `$1` by default, with optional case folding) or, with
//! `allow = false`, refuses the login. When rules are configured and none matches, the login
//! is refused, so a principal from an unexpected realm cannot slip through unmapped.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// Case folding applied to a mapped user name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseFold {
    /// As mapped.
    #[default]
    Keep,
    /// Lower case.
    Lower,
    /// Upper case.
    Upper,
}

/// One `[[auth.user_mapping]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserMappingRule {
    /// A regular expression that must match the whole principal.
    pub pattern: String,
    /// The user name, with `$1`, `${name}` for capture groups. Default `$1`.
    #[serde(default = "default_user_template")]
    pub user: String,
    /// `false` refuses principals this rule matches.
    #[serde(default = "default_true")]
    pub allow: bool,
    /// Case folding of the result.
    #[serde(default)]
    pub case: CaseFold,
}

fn default_user_template() -> String {
    "$1".into()
}

fn default_true() -> bool {
    true
}

/// Compiled rules.
#[derive(Debug, Clone, Default)]
pub struct UserMapping {
    rules: Vec<(Regex, UserMappingRule)>,
}

impl UserMapping {
    /// Compiles `rules`; an invalid pattern is reported with its position in the list.
    pub fn new(rules: &[UserMappingRule]) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            // Anchored so a rule for `(.*)@EXAMPLE\.COM` cannot match `x@EXAMPLE.COM.evil`.
            let regex = Regex::new(&format!("^(?:{})$", rule.pattern))
                .map_err(|e| format!("rule {} pattern `{}`: {e}", i + 1, rule.pattern))?;
            compiled.push((regex, rule.clone()));
        }
        Ok(UserMapping { rules: compiled })
    }

    /// No rules: principals are used as they are.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Maps `principal` to a user name.
    pub fn map(&self, principal: &str) -> Result<String, AuthError> {
        if self.rules.is_empty() {
            return Ok(principal.to_string());
        }
        for (regex, rule) in &self.rules {
            let Some(captures) = regex.captures(principal) else { continue };
            if !rule.allow {
                return Err(AuthError::Denied(format!("user mapping refuses principal `{principal}`")));
            }
            let mut user = String::new();
            captures.expand(&rule.user, &mut user);
            let user = match rule.case {
                CaseFold::Keep => user,
                CaseFold::Lower => user.to_lowercase(),
                CaseFold::Upper => user.to_uppercase(),
            };
            if user.is_empty() {
                return Err(AuthError::Denied(format!("user mapping gives an empty user for `{principal}`")));
            }
            return Ok(user);
        }
        Err(AuthError::Denied(format!("no user mapping rule matches principal `{principal}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, user: &str) -> UserMappingRule {
        UserMappingRule { pattern: pattern.into(), user: user.into(), allow: true, case: CaseFold::Keep }
    }

    #[test]
    fn first_matching_rule_maps_the_whole_principal() {
        let mapping = UserMapping::new(&[
            UserMappingRule { allow: false, ..rule(r"admin@.*", "$1") },
            UserMappingRule { case: CaseFold::Lower, ..rule(r"(.*)@EXAMPLE\.COM", "$1") },
            rule(r"(?P<cn>[a-z]+)\.svc", "svc-${cn}"),
        ])
        .expect("valid");
        assert_eq!(mapping.map("Alice@EXAMPLE.COM"), Ok("alice".into()));
        assert_eq!(mapping.map("etl.svc"), Ok("svc-etl".into()));
        assert!(matches!(mapping.map("admin@EXAMPLE.COM"), Err(AuthError::Denied(_))));
        // Anchored: a suffix after the realm does not match.
        assert!(matches!(mapping.map("bob@EXAMPLE.COM.evil"), Err(AuthError::Denied(_))));
        assert!(matches!(mapping.map("nobody"), Err(AuthError::Denied(_))));
    }

    #[test]
    fn no_rules_keep_the_principal_and_bad_patterns_are_named() {
        assert_eq!(UserMapping::default().map("x@Y"), Ok("x@Y".into()));
        let err = UserMapping::new(&[rule("(", "$1")]).expect_err("invalid regex");
        assert!(err.contains("rule 1"), "{err}");
    }
}
