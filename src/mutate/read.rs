//! Reading only the parts of a pod that mutation reads or writes.
//!
//! A pod on `/mutate` is mostly what mutation never looks at: images, commands, env, probes,
//! resources, volume sources. Building all of it as a `serde_json::Value`, cloning it and
//! walking it for the diff was most of the engine's cost. [`read`] instead deserialises the pod
//! against a [`Shape`] that names the fields mutation reads or writes: those are kept as
//! `Value`s, everything else is skipped by the parser without being built.
//!
//! The result (the *outline*) has the pod's structure wherever it has anything: every list that
//! is kept keeps all its elements at their indexes, every map its path. Mutation edits the
//! outline, and the patch is the difference between the outline before and after, so it is the
//! patch of the whole pod: whatever is not in the outline is the same on both sides of the whole
//! pod's diff too. Lists whose elements mutation may remove (`volumes`, `volumeMounts`) and every
//! map it writes into are kept whole, since removing an element shifts the ones after it and
//! the diff then compares them field by field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

use crate::admission::ObjectJson;

/// What to keep of a JSON value.
pub enum Shape {
    /// The whole value.
    Whole,
    /// An object: these members (by shape), the others skipped.
    Object(&'static [(&'static str, Shape)]),
    /// A list of elements of this shape.
    List(&'static Shape),
}

/// Of each container: what hardening reads and writes.
const CONTAINER: Shape = Shape::Object(&[
    ("name", Shape::Whole),
    ("securityContext", Shape::Whole),
    ("volumeMounts", Shape::Whole),
]);

/// Of a pod: its metadata whole (identity, labels and annotations, read as a typed
/// `ObjectMeta`), and of its spec what the runtime, hardening and bookkeeping steps touch.
pub const POD: Shape = Shape::Object(&[
    ("metadata", Shape::Whole),
    (
        "spec",
        Shape::Object(&[
            ("automountServiceAccountToken", Shape::Whole),
            ("containers", Shape::List(&CONTAINER)),
            ("ephemeralContainers", Shape::List(&CONTAINER)),
            ("initContainers", Shape::List(&CONTAINER)),
            ("nodeSelector", Shape::Whole),
            ("os", Shape::Whole),
            ("overhead", Shape::Whole),
            ("runtimeClassName", Shape::Whole),
            ("securityContext", Shape::Whole),
            ("tolerations", Shape::Whole),
            ("volumes", Shape::Whole),
        ]),
    ),
]);

/// The outline of the pod in `source`, as [`POD`] keeps it.
pub fn read(source: ObjectJson<'_>) -> Result<Value, serde_json::Error> {
    match source {
        ObjectJson::Text(raw) => {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            let value = Keep(&POD).deserialize(&mut de)?;
            de.end()?;
            Ok(value)
        }
        ObjectJson::Value(value) => Keep(&POD).deserialize(value),
    }
}

/// Deserialises one value as its shape keeps it. A value of another type than the shape
/// expects (a string where a map should be) is kept as it is: the step that reads it refuses
/// it with the same message as it would on the whole pod.
struct Keep(&'static Shape);

impl<'de> DeserializeSeed<'de> for Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Shape::Whole => Value::deserialize(d),
            shape => d.deserialize_any(Outline(shape)),
        }
    }
}

struct Outline(&'static Shape);

impl<'de> Visitor<'de> for Outline {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Keep(self.0).deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Every element is kept (indexes must stay those of the pod); a list where a map was
        // expected is kept whole.
        let item = match self.0 {
            Shape::List(item) => *item,
            _ => &Shape::Whole,
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(Keep(item))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Shape::Object(fields) = self.0 else {
            // A map where a list was expected: kept whole, as it is.
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                out.insert(key, map.next_value()?);
            }
            return Ok(Value::Object(out));
        };
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            match fields.iter().find(|(name, _)| *name == key) {
                Some((_, shape)) => {
                    let value = map.next_value_seed(Keep(shape))?;
                    out.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A map key, borrowed from the input when it has no escapes (no allocation for skipped keys).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        std::str::from_utf8(v)
            .map(|s| Cow::Owned(s.to_owned()))
            .map_err(E::custom)
    }
}
