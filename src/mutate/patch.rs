//! Editing the pod's JSON in place, and turning the edits into an RFC 6902 patch.
//!
//! Edits go to a copy of the pod's outline (`read`), and every step marks the places it sets
//! ([`Touched`]); the patch is the difference of the two at those places only
//! ([`diff_touched`]), walked in the order and with the operations of a whole diff, so it is
//! exactly the patch `json_patch::diff` gives for the whole pod: fields this crate does not
//! model survive untouched, `/` and `~` in keys are escaped (`~1`, `~0`), and a map the edit
//! created is added whole.

use serde_json::{Map, Value};

/// A pod the webhook must refuse, with the reason shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    pub fn new(message: impl Into<String>) -> Self {
        Refusal(message.into())
    }
}

/// The map at `key` inside `parent`, created when absent or null. `path` names it in errors.
pub fn child_map<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut Map<String, Value>, Refusal> {
    let slot = parent
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
        .ok_or_else(|| Refusal::new(format!("pod field {path} is not an object")))
}

/// The root object of the pod.
pub fn root(pod: &mut Value) -> Result<&mut Map<String, Value>, Refusal> {
    pod.as_object_mut()
        .ok_or_else(|| Refusal::new("the pod is not a JSON object"))
}

/// `metadata.labels` or `metadata.annotations`, created when absent.
pub fn metadata_map<'a>(
    pod: &'a mut Value,
    which: &str,
) -> Result<&'a mut Map<String, Value>, Refusal> {
    let metadata = child_map(root(pod)?, "metadata", "metadata")?;
    child_map(metadata, which, &format!("metadata.{which}"))
}

/// `spec`, which every pod has.
pub fn spec(pod: &mut Value) -> Result<&mut Map<String, Value>, Refusal> {
    root(pod)?
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Refusal::new("the pod has no spec object"))
}

/// Set a string entry, reporting whether it changed.
pub fn set_string(map: &mut Map<String, Value>, key: &str, value: &str) -> bool {
    if map.get(key).and_then(Value::as_str) == Some(value) {
        return false;
    }
    map.insert(key.to_owned(), Value::String(value.to_owned()));
    true
}

/// Remove an entry, reporting whether it was there. An emptied map is removed by the caller's diff
/// only if it was created by us; an existing empty map stays (the diff keeps it as it was).
pub fn remove(map: &mut Map<String, Value>, key: &str) -> bool {
    map.remove(key).is_some()
}

/// Drop maps that this edit created empty (`labels: {}` where there were none), so that running
/// the mutation on its own output does not differ by a spurious empty map.
pub fn prune_created_empty(original: Original<'_>, mutated: &mut Value) {
    let Some(meta) = mutated.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for which in ["labels", "annotations"] {
        let was_there = original
            .member("metadata")
            .and_then(|m| m.get(which))
            .is_some();
        let empty = meta
            .get(which)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if empty && !was_there {
            meta.remove(which);
        }
    }
}

/// The places one mutation set, as paths of (unescaped) tokens from the pod's root. A place
/// marked covers everything under it; marking a place that ends up unchanged costs a comparison
/// and adds nothing to the patch.
#[derive(Debug, Default)]
pub struct Touched {
    root: Trie,
}

#[derive(Debug, Default)]
struct Trie {
    /// Marked itself: compared whole.
    whole: bool,
    children: Vec<(String, Trie)>,
}

impl Touched {
    /// Mark the place at `path` (tokens from the root, e.g. `["spec", "containers", "0"]`).
    pub fn mark<S: AsRef<str>>(&mut self, path: &[S]) {
        let mut node = &mut self.root;
        for token in path {
            if node.whole {
                return;
            }
            let token = token.as_ref();
            let at = match node.children.iter().position(|(t, _)| t == token) {
                Some(at) => at,
                None => {
                    node.children.push((token.to_owned(), Trie::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        node.whole = true;
        node.children.clear();
    }
}

/// The RFC 6902 operations turning `original` into `mutated`, where the two differ only at the
/// places in `touched`: the operations and their order are those of [`diff`] (and of
/// `json_patch::diff`), but only the touched places are walked.
pub fn diff_touched(
    original: Original<'_>,
    mutated: &Value,
    touched: &Touched,
) -> Vec<json_patch::PatchOperation> {
    let mut ops = Vec::new();
    walk_touched(original, mutated, touched, &mut ops);
    ops
}

/// The pointers of [`diff_touched`]'s operations, in its order, without building them: what
/// the effective pod's `defaulted` list needs (each operation would copy its value).
pub fn touched_pointers(original: Original<'_>, mutated: &Value, touched: &Touched) -> Vec<String> {
    let mut pointers = Pointers(Vec::new());
    walk_touched(original, mutated, touched, &mut pointers);
    pointers.0
}

/// Where the walk's operations go: built whole, or only their pointers kept.
trait Ops {
    /// `add` (with `add`), `replace` (a value without `add`) or `remove` (no value) at `path`.
    fn push(&mut self, path: &str, value: Option<&Value>, add: bool);
}

impl Ops for Vec<json_patch::PatchOperation> {
    fn push(&mut self, path: &str, value: Option<&Value>, add: bool) {
        Vec::push(self, operation(path, value, add));
    }
}

struct Pointers(Vec<String>);

impl Ops for Pointers {
    fn push(&mut self, path: &str, _: Option<&Value>, _: bool) {
        self.0.push(path.to_owned());
    }
}

fn walk_touched(original: Original<'_>, mutated: &Value, touched: &Touched, ops: &mut impl Ops) {
    let path = &mut String::new();
    match (original.spec, mutated) {
        (None, _) => touched_at(Some(original.root), Some(mutated), &touched.root, path, ops),
        // Every place a step marks is under a member (`/spec/...`), so the root is never
        // compared whole and its members can be looked up wherever they live.
        (Some(_), Value::Object(r)) => {
            members_at(|key| original.member(key), r, &touched.root, path, ops)
        }
        (Some(_), _) => ops.push(path, Some(mutated), false),
    }
}

/// The pod a mutation started from: the root, and its spec where that lives apart. The
/// effective pod of a Sandbox is judged from the request's own pod spec, so the steps mutate
/// the one copy made of it and the patch is taken against the original in the request.
#[derive(Debug, Clone, Copy)]
pub struct Original<'a> {
    pub root: &'a Value,
    /// When given, the pod's `spec` (the root's own `spec`, if any, is not looked at).
    pub spec: Option<&'a Value>,
}

impl<'a> Original<'a> {
    pub fn whole(root: &'a Value) -> Self {
        Original { root, spec: None }
    }

    fn member(&self, key: &str) -> Option<&'a Value> {
        match self.spec {
            Some(spec) if key == "spec" => Some(spec),
            _ => self.root.get(key),
        }
    }
}

fn touched_at(
    left: Option<&Value>,
    right: Option<&Value>,
    node: &Trie,
    path: &mut String,
    ops: &mut impl Ops,
) {
    let (left, right) = match (left, right) {
        (Some(l), Some(r)) => (l, r),
        // What the whole diff does for a member on one side only.
        (None, Some(r)) => return ops.push(path, Some(r), true),
        (Some(_), None) => return ops.push(path, None, false),
        (None, None) => return,
    };
    if node.whole {
        return diff_at(left, right, path, ops);
    }
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => members_at(|key| l.get(key), r, node, path, ops),
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => {
            let mut items: Vec<(usize, &Trie)> = node
                .children
                .iter()
                .filter_map(|(k, child)| Some((k.parse().ok()?, child)))
                .filter(|(i, _)| *i < l.len())
                .collect();
            items.sort_unstable_by_key(|(i, _)| *i);
            for (index, child) in items {
                let len = push_token(path, &index.to_string());
                touched_at(l.get(index), r.get(index), child, path, ops);
                path.truncate(len);
            }
        }
        // A list that changed length, or a value that changed type: walked whole.
        _ => diff_at(left, right, path, ops),
    }
}

/// The touched members of an object, the original's looked up by `left`.
fn members_at<'a>(
    left: impl Fn(&str) -> Option<&'a Value>,
    r: &Map<String, Value>,
    node: &Trie,
    path: &mut String,
    ops: &mut impl Ops,
) {
    let mut keys: Vec<(&str, &Trie)> = node
        .children
        .iter()
        .map(|(k, child)| (k.as_str(), child))
        .collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    // Members still there first, in order, then removed ones: as the whole diff walks.
    for (key, child) in keys.iter().filter(|(k, _)| r.contains_key(*k)) {
        let len = push_token(path, key);
        touched_at(left(key), r.get(*key), child, path, ops);
        path.truncate(len);
    }
    for (key, _) in keys
        .iter()
        .filter(|(k, _)| !r.contains_key(*k) && left(k).is_some())
    {
        let len = push_token(path, key);
        ops.push(path, None, false);
        path.truncate(len);
    }
}

/// The RFC 6902 operations turning `original` into `mutated`.
///
/// The same walk and the same operations as `json_patch::diff` (tests hold them equal), written
/// here because that one keeps its position as a `jsonptr::PointerBuf` and pushes and pops a
/// token for every node it visits, unchanged ones included: under `/mutate` load that pointer
/// bookkeeping was over half of the diff's cost. Here the position is a plain string, escaped
/// once per key, and a pointer is only parsed for the few nodes that changed. Mutation walks
/// only what it touched ([`diff_touched`]); the whole walk is its reference in tests.
#[cfg(test)]
pub fn diff(original: &Value, mutated: &Value) -> Vec<json_patch::PatchOperation> {
    let mut ops = Vec::new();
    diff_at(original, mutated, &mut String::new(), &mut ops);
    ops
}

fn diff_at(left: &Value, right: &Value, path: &mut String, ops: &mut impl Ops) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (key, right_value) in r {
                let len = push_token(path, key);
                match l.get(key) {
                    Some(left_value) => diff_at(left_value, right_value, path, ops),
                    None => ops.push(path, Some(right_value), true),
                }
                path.truncate(len);
            }
            for key in l.keys().filter(|k| !r.contains_key(*k)) {
                let len = push_token(path, key);
                ops.push(path, None, false);
                path.truncate(len);
            }
        }
        (Value::Array(l), Value::Array(r)) => {
            // Elements past the shorter list are removed (each at the same index, as the list
            // shrinks) or appended, exactly as `json_patch::diff` does.
            let mut removed = 0usize;
            for index in 0..l.len().max(r.len()) {
                let len = push_token(path, &(index - removed).to_string());
                match (l.get(index), r.get(index)) {
                    (Some(lv), Some(rv)) => diff_at(lv, rv, path, ops),
                    (Some(_), None) => {
                        removed += 1;
                        ops.push(path, None, false);
                    }
                    (None, Some(rv)) => ops.push(path, Some(rv), true),
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        _ if left == right => {}
        _ => ops.push(path, Some(right), false),
    }
}

/// Append `/token` (RFC 6901-escaped) to `path`; returns the length to truncate back to.
fn push_token(path: &mut String, token: &str) -> usize {
    let len = path.len();
    path.push('/');
    // Escaped in one pass, without allocating (label keys nearly all hold a `/`).
    let mut rest = token;
    while let Some(at) = rest.find(['~', '/']) {
        path.push_str(&rest[..at]);
        path.push_str(if rest[at..].starts_with('~') {
            "~0"
        } else {
            "~1"
        });
        rest = &rest[at + 1..];
    }
    path.push_str(rest);
    len
}

/// `add` (with `add`), `replace` (a value without `add`) or `remove` (no value) at `path`.
fn operation(path: &str, value: Option<&Value>, add: bool) -> json_patch::PatchOperation {
    use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
    // Built from escaped tokens, so it always parses; the root ("") is a valid pointer too.
    let path = json_patch::jsonptr::PointerBuf::parse(path).unwrap_or_default();
    match (value, add) {
        (Some(value), true) => PatchOperation::Add(AddOperation {
            path,
            value: value.clone(),
        }),
        (Some(value), false) => PatchOperation::Replace(ReplaceOperation {
            path,
            value: value.clone(),
        }),
        (None, _) => PatchOperation::Remove(RemoveOperation { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_with_slash_and_tilde_are_escaped_and_apply() {
        let original = json!({"metadata": {"name": "p"}, "spec": {}});
        let mut mutated = original.clone();
        let labels = metadata_map(&mut mutated, "labels").unwrap();
        set_string(labels, "example.io/a~b", "v");
        let ops = diff(&original, &mutated);
        let text = serde_json::to_string(&ops).unwrap();
        assert!(
            text.contains("/metadata/labels") || text.contains("example.io~1a~0b"),
            "{text}"
        );
        let mut doc = original.clone();
        json_patch::patch(&mut doc, &ops).unwrap();
        assert_eq!(doc["metadata"]["labels"]["example.io/a~b"], "v");

        // Adding to an existing map addresses the key itself, escaped.
        let mut again = doc.clone();
        set_string(metadata_map(&mut again, "labels").unwrap(), "x/y~z", "w");
        let ops = diff(&doc, &again);
        let text = serde_json::to_string(&ops).unwrap();
        assert!(text.contains("/metadata/labels/x~1y~0z"), "{text}");
        json_patch::patch(&mut doc, &ops).unwrap();
        assert_eq!(doc, again);
    }

    #[test]
    fn diff_equals_json_patch_diff_and_applies() {
        let cases = [
            (json!({"a": 1}), json!({"a": 2, "b": {"c~/d": [1, 2]}})),
            (
                json!({"x": [1, 2, 3], "y": {"z": null}}),
                json!({"x": [1], "y": {}}),
            ),
            (json!({"x": [1]}), json!({"x": [1, {"k": "v"}, 3]})),
            (json!([{"a": 1}, 2]), json!([{"a": 1, "b": 2}])),
            (json!({"k": "v"}), json!(["replaced", "root"])),
            (
                json!({"same": {"deep": [1, {"x": true}]}}),
                json!({"same": {"deep": [1, {"x": true}]}}),
            ),
            (json!({"t": "s"}), json!({"t": 5})),
        ];
        for (left, right) in cases {
            let ours = diff(&left, &right);
            assert_eq!(ours, json_patch::diff(&left, &right).0, "{left} -> {right}");
            let mut doc = left.clone();
            json_patch::patch(&mut doc, &ours).unwrap();
            assert_eq!(doc, right);
        }
    }

    #[test]
    fn wrong_shapes_are_refusals() {
        let mut pod = json!({"metadata": {"labels": "nope"}});
        assert!(metadata_map(&mut pod, "labels").is_err());
        let mut pod = json!({"metadata": {"labels": null}});
        assert!(metadata_map(&mut pod, "labels").is_ok());
        assert!(spec(&mut json!({})).is_err());
    }
}
