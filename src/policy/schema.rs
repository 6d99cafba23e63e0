//! The subset of OpenAPI v3 schema that Gatekeeper ConstraintTemplates use for parameters.
//!
//! Rego treats a wrong-typed value as "undefined", which makes a rule silently pass (a string
//! where a list was expected iterates to nothing). Checking parameters at load turns that
//! fail-open into a rejected policy set.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schema {
    #[serde(rename = "type", default)]
    pub ty: Option<Type>,
    /// Accepted for the reader of the file; the engine has no use for it.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, Schema>,
    #[serde(default)]
    pub items: Option<Box<Schema>>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(rename = "enum", default)]
    pub one_of: Vec<Value>,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl Schema {
    /// Check `value` (found at `at`) against this schema.
    pub fn check(&self, value: &Value, at: &str) -> Result<(), String> {
        if let Some(ty) = self.ty {
            let ok = match ty {
                Type::String => value.is_string(),
                Type::Integer => value.is_i64() || value.is_u64(),
                Type::Number => value.is_number(),
                Type::Boolean => value.is_boolean(),
                Type::Array => value.is_array(),
                Type::Object => value.is_object(),
            };
            if !ok {
                return Err(format!("{at} must be of type {ty:?}, got {value}").to_lowercase());
            }
        }
        if !self.one_of.is_empty() && !self.one_of.contains(value) {
            return Err(format!(
                "{at} must be one of {:?}, got {value}",
                self.one_of
            ));
        }
        if let Some(n) = value.as_f64()
            && (self.minimum.is_some_and(|min| n < min) || self.maximum.is_some_and(|max| n > max))
        {
            return Err(format!("{at} = {n} is out of range"));
        }
        if let Value::Object(map) = value {
            for key in &self.required {
                if !map.contains_key(key) {
                    return Err(format!("{at}.{key} is required"));
                }
            }
            for (key, sub) in &self.properties {
                if let Some(v) = map.get(key) {
                    sub.check(v, &format!("{at}.{key}"))?;
                }
            }
        }
        if let (Value::Array(list), Some(items)) = (value, &self.items) {
            for (i, v) in list.iter().enumerate() {
                items.check(v, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(yaml: &str) -> Schema {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn types_nest_through_properties_and_items() {
        let s = schema(
            "type: object\nproperties:\n  names:\n    type: array\n    items: {type: string}\n  max: {type: integer, minimum: 0}\nrequired: [max]\n",
        );
        assert!(s.check(&json!({"names": ["a"], "max": 3}), "p").is_ok());
        let e = s.check(&json!({"names": "a", "max": 3}), "p").unwrap_err();
        assert!(e.contains("p.names must be of type array"), "{e}");
        let e = s.check(&json!({"names": [1], "max": 3}), "p").unwrap_err();
        assert!(e.contains("p.names[0]"), "{e}");
        let e = s.check(&json!({"names": []}), "p").unwrap_err();
        assert!(e.contains("p.max is required"), "{e}");
        let e = s.check(&json!({"max": -1}), "p").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(s.check(&json!({"max": 1.5}), "p").is_err());
    }
}
