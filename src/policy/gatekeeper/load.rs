//! Adding parsed templates and constraints to the policy set's engine.

use std::collections::{BTreeMap, HashSet};

use regorus::Engine;

use super::super::compile::{self, Role};
use super::super::set::{PARAMS_ROOT, Pending, direct_parameters};
use super::super::{LoadIssue, SourceFile};
use super::Parsed;

/// Add every template's Rego and turn every constraint into a pending policy.
///
/// Gatekeeper compiles each template apart, so two templates may both define `package lib.x`;
/// this engine holds one namespace (that is what makes one evaluation serve every policy), so
/// such a clash is refused here rather than letting the two libraries merge silently.
pub(in crate::policy) fn add_all(
    engine: &mut Engine,
    parsed: Parsed,
    packages: &mut BTreeMap<String, String>,
    pending: &mut Vec<Pending>,
    issues: &mut Vec<LoadIssue>,
) {
    let Parsed {
        templates,
        constraints,
    } = parsed;
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    let mut lib_texts: HashSet<&str> = HashSet::new();
    let mut next_key = 0usize;
    for template in &templates {
        if let Some(other) = kinds.insert(&template.kind, &template.origin) {
            issues.push(issue(
                &template.origin,
                format!(
                    "ConstraintTemplate kind {} is also defined in {other}",
                    template.kind
                ),
            ));
            continue;
        }
        let mine: Vec<_> = constraints
            .iter()
            .filter(|c| c.kind == template.kind)
            .collect();
        let mut failed = false;
        for lib in &template.libs {
            if !lib_texts.insert(lib.text.trim()) {
                continue; // the very same library, shipped by another template too
            }
            match compile::add_module(engine, lib) {
                Ok(package) if compile::role_of(&lib.path, &package) == Role::Library => {
                    if let Some(other) = packages.insert(package.clone(), lib.path.clone()) {
                        failed = true;
                        issues.push(issue(&lib.path, format!("library package {package} is also defined by {other}; rename one (libraries of all policies share one namespace here)")));
                    }
                }
                Ok(package) => {
                    failed = true;
                    issues.push(issue(
                        &lib.path,
                        format!("a template library must be package lib or lib.*, not {package}"),
                    ));
                }
                Err(found) => {
                    failed = true;
                    issues.push(found);
                }
            }
        }
        let keys: Vec<String> = mine
            .iter()
            .map(|_| {
                next_key += 1;
                format!("g{next_key}")
            })
            .collect();
        // One constraint and no library reading `input`: its parameters can be read from `data`
        // directly, which keeps regorus's rule cache (see `direct_parameters`).
        let libs_read_input = template.libs.iter().any(|l| l.text.contains("input"));
        let direct = match keys.as_slice() {
            [key] if !libs_read_input => direct_parameters(
                &template.rego.text,
                &format!("data.{PARAMS_ROOT}.parameters.{key}"),
            ),
            _ => None,
        };
        let module = SourceFile {
            path: template.rego.path.clone(),
            text: direct.clone().unwrap_or_else(|| template.rego.text.clone()),
        };
        let package = match compile::add_module(engine, &module) {
            Ok(p) => p,
            Err(found) => {
                issues.push(found);
                continue;
            }
        };
        if compile::role_of(&module.path, &package) == Role::Library {
            issues.push(issue(
                &module.path,
                format!("a template's own package cannot be a library package ({package})"),
            ));
            continue;
        }
        if let Some(other) = packages.insert(package.clone(), module.path.clone()) {
            issues.push(issue(
                &module.path,
                format!(
                    "{package} is also the package of {other}; each template needs its own package"
                ),
            ));
            continue;
        }
        if failed {
            continue;
        }
        for (constraint, key) in mine.into_iter().zip(keys) {
            if let Some(schema) = &template.schema
                && let Err(e) = schema.check(&constraint.meta.parameters, "spec.parameters")
            {
                issues.push(issue(
                    &constraint.origin,
                    format!("parameters do not match the template's openAPIV3Schema: {e}"),
                ));
                continue;
            }
            pending.push(Pending {
                path: module.path.clone(),
                package: package.clone(),
                meta: constraint.meta.clone(),
                key,
                direct: direct.is_some(),
            });
        }
    }
    for constraint in &constraints {
        if !kinds.contains_key(constraint.kind.as_str()) {
            issues.push(issue(
                &constraint.origin,
                format!(
                    "no ConstraintTemplate in the set defines kind {} (its constraint cannot be evaluated)",
                    constraint.kind
                ),
            ));
        }
    }
}

fn issue(file: &str, message: String) -> LoadIssue {
    LoadIssue {
        file: file.to_owned(),
        line: None,
        message,
    }
}
