//! Group names and ids: `${VAR}` name templates and the concrete [`GroupId`] they expand to.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

/// The concrete id of a resource group: its path of names from a root group, after template
/// expansion (`["global", "adhoc", "alice"]`, shown as `global.adhoc.alice`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GroupId(Vec<String>);

impl GroupId {
    /// A group id from its segments, root first. `None` if there are none or one is empty.
    pub fn new<I, S>(segments: I) -> Option<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let segments: Vec<String> = segments.into_iter().map(Into::into).collect();
        if segments.is_empty() || segments.iter().any(String::is_empty) { None } else { Some(GroupId(segments)) }
    }

    /// Parses the dotted form `global.adhoc.alice` (segments that contain a dot cannot be written
    /// this way; use [`GroupId::new`] or the `/`-separated form of the state URL).
    pub fn from_dotted(text: &str) -> Option<Self> {
        Self::new(text.split('.'))
    }

    /// Parses the `/`-separated form Trino uses in `/v1/resourceGroupState/global/adhoc/alice`.
    pub fn from_url_path(path: &str) -> Option<Self> {
        Self::new(path.trim_matches('/').split('/'))
    }

    /// The names from the root group down to this group.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The id of the parent group; `None` for a root group.
    pub fn parent(&self) -> Option<GroupId> {
        (self.0.len() > 1).then(|| GroupId(self.0[..self.0.len() - 1].to_vec()))
    }

    /// The id of the sub-group `name` of this group.
    pub(crate) fn child(&self, name: String) -> GroupId {
        let mut segments = self.0.clone();
        segments.push(name);
        GroupId(segments)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// One piece of a group name template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Fragment {
    Literal(String),
    Variable(String),
}

/// A group name that may hold variables: `adhoc`, `${USER}`, `bi-${toolname}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameTemplate {
    text: String,
    fragments: Vec<Fragment>,
}

impl NameTemplate {
    /// Parses a group name. Variables are `${name}` with `name` a letter then letters or digits;
    /// a name may not be empty, contain a `.`, or hold a `$`, `{` or `}` outside a variable.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("group name is empty".into());
        }
        if text.contains('.') {
            return Err(format!("group name '{text}' contains a '.'"));
        }
        let mut fragments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['$', '{', '}']) {
                None => {
                    fragments.push(Fragment::Literal(rest.to_string()));
                    rest = "";
                }
                Some(at) => {
                    if at > 0 {
                        fragments.push(Fragment::Literal(rest[..at].to_string()));
                    }
                    let tail = &rest[at..];
                    let name = tail
                        .strip_prefix("${")
                        .and_then(|after| after.split_once('}'))
                        .filter(|(name, _)| is_variable_name(name));
                    let Some((name, after)) = name else {
                        return Err(format!(
                            "group name '{text}' has a '$', '{{' or '}}' that is not part of a variable like ${{USER}}"
                        ));
                    };
                    fragments.push(Fragment::Variable(name.to_string()));
                    rest = after;
                }
            }
        }
        Ok(NameTemplate { text: text.to_string(), fragments })
    }

    /// The name as written in the file.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if the name holds at least one variable.
    pub fn is_template(&self) -> bool {
        self.fragments.iter().any(|f| matches!(f, Fragment::Variable(_)))
    }

    /// The variables the name uses.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.fragments.iter().filter_map(|f| match f {
            Fragment::Variable(name) => Some(name.as_str()),
            Fragment::Literal(_) => None,
        })
    }

    /// Expands the variables; `None` if one is missing or the result is empty.
    pub(crate) fn expand(&self, variables: &HashMap<String, String>) -> Option<String> {
        let mut out = String::new();
        for fragment in &self.fragments {
            match fragment {
                Fragment::Literal(text) => out.push_str(text),
                Fragment::Variable(name) => out.push_str(variables.get(name)?),
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

impl fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// True for a valid variable name: a letter, then letters or digits.
pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_expand() {
        let t = NameTemplate::parse("bi-${toolname}-${USER}").expect("valid");
        assert!(t.is_template());
        assert_eq!(t.variables().collect::<Vec<_>>(), ["toolname", "USER"]);
        let vars = HashMap::from([("toolname".to_string(), "tableau".to_string()), ("USER".into(), "kay".into())]);
        assert_eq!(t.expand(&vars).as_deref(), Some("bi-tableau-kay"));
        assert_eq!(t.expand(&HashMap::new()), None);
        let literal = NameTemplate::parse("adhoc").expect("valid");
        assert!(!literal.is_template());
        assert_eq!(literal.expand(&HashMap::new()).as_deref(), Some("adhoc"));
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "a.b", "${}", "${1x}", "a$b", "a{b", "${USER", "x}", "${US-ER}"] {
            assert!(NameTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_ids_print_dotted_and_serialize_as_segments() {
        let id = GroupId::from_dotted("global.adhoc.alice").expect("valid");
        assert_eq!(id.to_string(), "global.adhoc.alice");
        assert_eq!(id.parent().map(|p| p.to_string()).as_deref(), Some("global.adhoc"));
        assert_eq!(serde_json::to_string(&id).ok().as_deref(), Some(r#"["global","adhoc","alice"]"#));
        assert_eq!(GroupId::from_url_path("/global/adhoc/alice/"), Some(id));
        assert_eq!(GroupId::from_dotted("a..b"), None);
        assert_eq!(GroupId::new(Vec::<String>::new()), None);
    }
}
