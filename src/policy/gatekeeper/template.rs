//! Reading a ConstraintTemplate: its kind, its Rego and libs, the schema of its parameters.

use serde_json::Value;

use super::super::SourceFile;
use super::super::schema::Schema;
use super::{Template, str_at};

/// The only Gatekeeper target this webhook implements.
const ADMISSION_TARGET: &str = "admission.k8s.gatekeeper.sh";

pub fn parse(file: &SourceFile, doc: &Value, origin: &str) -> Result<Template, String> {
    let name = str_at(doc, "/metadata/name").unwrap_or("");
    let kind = str_at(doc, "/spec/crd/spec/names/kind")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("ConstraintTemplate {name:?} has no spec.crd.spec.names.kind"))?;
    if !name.is_empty() && name != kind.to_ascii_lowercase() {
        return Err(format!(
            "ConstraintTemplate {name:?}: metadata.name must be {:?} (the kind in lower case), as Gatekeeper requires",
            kind.to_ascii_lowercase()
        ));
    }
    let targets = doc
        .pointer("/spec/targets")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("ConstraintTemplate {kind}: spec.targets must be a list"))?;
    let [target] = targets.as_slice() else {
        return Err(format!(
            "ConstraintTemplate {kind}: spec.targets must hold exactly one target, found {}",
            targets.len()
        ));
    };
    let target_name = str_at(target, "/target").unwrap_or("");
    if target_name != ADMISSION_TARGET {
        return Err(format!(
            "ConstraintTemplate {kind}: target {target_name:?} is not supported (only {ADMISSION_TARGET})"
        ));
    }
    let (rego, libs) = rego_of(target, kind)?;
    let schema = doc
        .pointer("/spec/crd/spec/validation/openAPIV3Schema")
        .filter(|s| !s.is_null())
        .and_then(|s| serde_json::from_value::<Schema>(s.clone()).ok());
    let module = |text: &str, path: String| SourceFile {
        text: align(&file.text, text),
        path,
    };
    Ok(Template {
        kind: kind.to_owned(),
        origin: origin.to_owned(),
        rego: module(rego, origin.to_owned()),
        libs: libs
            .iter()
            .enumerate()
            .map(|(i, l)| module(l, format!("{origin}.libs{}", i + 1)))
            .collect(),
        schema,
    })
}

/// The Rego source and libs of a target: `rego`/`libs`, or the `code[]` entry with engine Rego.
fn rego_of<'a>(target: &'a Value, kind: &str) -> Result<(&'a str, Vec<&'a str>), String> {
    let libs_of = |v: Option<&'a Value>| -> Result<Vec<&'a str>, String> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .map(|l| {
                    l.as_str()
                        .ok_or_else(|| format!("ConstraintTemplate {kind}: libs must be strings"))
                })
                .collect(),
            Some(_) => Err(format!("ConstraintTemplate {kind}: libs must be a list")),
        }
    };
    if let Some(rego) = target
        .get("rego")
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty())
    {
        return Ok((rego, libs_of(target.get("libs"))?));
    }
    let code = match target.get("code") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err(format!("ConstraintTemplate {kind}: code must be a list")),
    };
    if let Some(entry) = code.iter().find(|c| str_at(c, "/engine") == Some("Rego")) {
        let rego = str_at(entry, "/source/rego")
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| {
                format!("ConstraintTemplate {kind}: code engine Rego has no source.rego")
            })?;
        if let Some(v) = str_at(entry, "/source/version")
            && v != "v0"
            && v != "v1"
        {
            return Err(format!(
                "ConstraintTemplate {kind}: source.version {v:?} must be v0 or v1"
            ));
        }
        return Ok((rego, libs_of(entry.pointer("/source/libs"))?));
    }
    let engines: Vec<&str> = code.iter().filter_map(|c| str_at(c, "/engine")).collect();
    if engines.is_empty() {
        Err(format!(
            "ConstraintTemplate {kind}: target has no rego and no code"
        ))
    } else {
        Err(format!(
            "ConstraintTemplate {kind} is unsupported: it has only {} code, and sandbox-admission evaluates Rego only \
             (refused rather than skipped, so its constraints are never silently passed)",
            engines.join(", ")
        ))
    }
}

/// Prefix `rego` with blank lines so its line numbers are those of the YAML file it came from,
/// when its first line appears exactly once there. Blank lines change nothing in Rego.
fn align(yaml: &str, rego: &str) -> String {
    let Some((first_index, first)) = rego.lines().enumerate().find(|(_, l)| !l.trim().is_empty())
    else {
        return rego.to_owned();
    };
    let wanted = first.trim();
    let mut hits = yaml
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == wanted)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (Some(at), None) if at >= first_index => {
            format!("{}{rego}", "\n".repeat(at - first_index))
        }
        _ => rego.to_owned(),
    }
}
