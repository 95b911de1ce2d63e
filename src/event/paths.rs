//! The paths an event is read at, compiled into one tree of their segments: the schema's
//! fields, and those the field assignments add when the file loads. One walk finds all
//! their values in an event: each object on the way is read member by member once (of
//! repeated names the last counts, as in serde_json), instead of once per path.

use crate::json::{JsonContainerTrait, Value};

/// A path's place in the tree.
pub type Node = usize;

/// The schema's fields, the first nodes of every tree (in the order `default` adds them).
pub(super) const ID: Node = 1;
pub(super) const ACTION: Node = 2;
pub(super) const CREATED_AT: Node = 3;
pub(super) const CUSTOMER: Node = 4;
pub(super) const DATA: Node = 5;
pub(super) const CUSTOMER_ID: Node = 6;
pub(super) const CUSTOMER_EMAIL: Node = 7;
pub(super) const CUSTOMER_PHONE: Node = 8;

/// The tree; node 0 is the event itself, and a node comes after its parent.
#[derive(Debug, Clone)]
pub struct PathTree {
    /// Each node's children.
    children: Vec<Vec<Child>>,
}

/// A step down from a node: the segment that leads there, and where it is.
#[derive(Debug, Clone)]
struct Child {
    segment: String,
    /// The segment as an array index, when it is one (`items.0`).
    index: Option<usize>,
    node: Node,
}

impl Default for PathTree {
    /// The schema's fields alone.
    fn default() -> Self {
        let mut tree = PathTree {
            children: vec![Vec::new()],
        };
        for path in [
            &["id"][..],
            &["action"],
            &["created_at"],
            &["customer"],
            &["data"],
            &["customer", "id"],
            &["customer", "email"],
            &["customer", "phone"],
        ] {
            tree.insert(path);
        }
        tree
    }
}

impl PathTree {
    /// The node of a dotted path's segments, added when new.
    pub fn insert(&mut self, segments: &[&str]) -> Node {
        let mut node = 0;
        for segment in segments {
            let known = self.children[node].iter().find(|c| c.segment == *segment);
            node = match known {
                Some(child) => child.node,
                None => {
                    let child = self.children.len();
                    self.children.push(Vec::new());
                    self.children[node].push(Child {
                        segment: segment.to_string(),
                        index: segment.parse().ok(),
                        node: child,
                    });
                    child
                }
            };
        }
        node
    }

    /// Every node's value in `event`: `found[node]`, `None` where the path leads nowhere.
    /// Array items are reached by an index segment (`items.0`).
    pub(super) fn walk<'v>(&self, event: &'v Value) -> Vec<Option<&'v Value>> {
        let mut found = vec![None; self.children.len()];
        found[0] = Some(event);
        for (node, children) in self.children.iter().enumerate() {
            let Some(value) = found[node].filter(|_| !children.is_empty()) else {
                continue;
            };
            if let Some(object) = value.as_object() {
                for (name, member) in object.iter() {
                    // A node's segments differ, so one child at most has this name.
                    if let Some(child) = children.iter().find(|c| same_name(&c.segment, name)) {
                        found[child.node] = Some(member);
                    }
                }
            } else if let Some(items) = value.as_array() {
                for child in children {
                    found[child.node] = child.index.and_then(|i| items.get(i));
                }
            }
        }
        found
    }
}

/// Names are short: compared byte by byte in place they cost less than a call to
/// `memcmp` each, which showed in profiles of the walk.
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonValueTrait;

    #[test]
    fn the_schema_fields_come_first() {
        let mut tree = PathTree::default();
        assert_eq!(tree.insert(&["id"]), ID);
        assert_eq!(tree.insert(&["action"]), ACTION);
        assert_eq!(tree.insert(&["created_at"]), CREATED_AT);
        assert_eq!(tree.insert(&["customer"]), CUSTOMER);
        assert_eq!(tree.insert(&["data"]), DATA);
        assert_eq!(tree.insert(&["customer", "id"]), CUSTOMER_ID);
        assert_eq!(tree.insert(&["customer", "email"]), CUSTOMER_EMAIL);
        assert_eq!(tree.insert(&["customer", "phone"]), CUSTOMER_PHONE);
    }

    #[test]
    fn one_walk_finds_every_path() {
        let mut tree = PathTree::default();
        let tier = tree.insert(&["customer", "tier"]);
        let tags = tree.insert(&["customer", "tags"]);
        let first_tag = tree.insert(&["customer", "tags", "0"]);
        let third_tag = tree.insert(&["customer", "tags", "2"]);
        let missing = tree.insert(&["data", "points"]);
        assert_eq!(
            tree.insert(&["customer", "tier"]),
            tier,
            "known paths are shared"
        );
        let event = crate::json::parse(
            br#"{"customer":{"tier":"silver","tags":["a","b"],"tier":"gold"},"data":null}"#,
        )
        .unwrap();
        let found = tree.walk(&event);
        let text = |node: Node| found[node].and_then(|v| v.as_str());
        assert_eq!(text(tier), Some("gold"), "the last of repeated names");
        assert!(found[tags].is_some_and(|v| v.is_array()));
        assert_eq!(text(first_tag), Some("a"));
        assert!(found[third_tag].is_none());
        assert!(found[missing].is_none());
    }
}
