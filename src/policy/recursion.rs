//! Refuse recursive functions at load.
//!
//! regorus catches a rule that depends on itself when it evaluates it, but a function that
//! calls itself (directly or through others) recurses until the thread's stack overflows, which
//! aborts the whole process: one bad policy would take the webhook down on every request.
//! Rego forbids recursion anyway (OPA rejects it at compile time), so refusing it costs nothing.
//!
//! The call graph is read from each function's source text (string literals and comments
//! removed), resolved through the module's package and imports.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use regorus::Engine;
use regorus::unstable::{Rule, RuleHead};

use super::LoadIssue;

struct Function {
    file: String,
    line: u32,
    calls: BTreeSet<String>,
}

/// Every cycle of function calls among the modules in `engine`, one issue per cycle.
pub fn find_recursion(engine: &mut Engine) -> Vec<LoadIssue> {
    let Ok(call) = Regex::new(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\(") else {
        return Vec::new();
    };
    let mut functions: BTreeMap<String, Function> = BTreeMap::new();
    for module in engine.get_modules().iter() {
        let package = format!("data.{}", module.package.refr.span().text());
        let mut aliases: BTreeMap<String, String> = BTreeMap::new();
        for import in &module.imports {
            let path = import.refr.span().text().to_owned();
            if !path.starts_with("data.") {
                continue;
            }
            let alias = match &import.r#as {
                Some(span) => span.text().to_owned(),
                None => path.rsplit('.').next().unwrap_or(&path).to_owned(),
            };
            aliases.insert(alias, path);
        }
        for rule in &module.policy {
            let Rule::Spec {
                span,
                head: RuleHead::Func { refr, .. },
                ..
            } = rule.as_ref()
            else {
                continue;
            };
            let name = format!("{package}.{}", refr.span().text());
            let body = strip_strings_and_comments(span.text());
            let head_len = refr.span().text().len();
            let calls: Vec<String> = call
                .captures_iter(&body)
                .filter_map(|c| c.get(1))
                // The rule's own head is not a call.
                .filter(|m| m.start() >= head_len)
                .map(|m| resolve(m.as_str(), &package, &aliases))
                .collect();
            let entry = functions.entry(name).or_insert_with(|| Function {
                file: span.source.get_path().clone(),
                line: span.line,
                calls: BTreeSet::new(),
            });
            entry.calls.extend(calls);
        }
    }
    cycles(&functions)
}

fn resolve(path: &str, package: &str, aliases: &BTreeMap<String, String>) -> String {
    if path.starts_with("data.") {
        return path.to_owned();
    }
    let (first, rest) = path.split_once('.').unwrap_or((path, ""));
    match aliases.get(first) {
        Some(target) if rest.is_empty() => target.clone(),
        Some(target) => format!("{target}.{rest}"),
        None => format!("{package}.{path}"),
    }
}

fn cycles(functions: &BTreeMap<String, Function>) -> Vec<LoadIssue> {
    let mut issues = Vec::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for start in functions.keys() {
        if reported.contains(start) {
            continue;
        }
        // Depth-first search for a path from `start` back to itself.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen: BTreeSet<String> = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            let Some(f) = functions.get(&at) else {
                continue;
            };
            for next in &f.calls {
                if next == start {
                    let mut shown = path.clone();
                    shown.push(start.clone());
                    reported.extend(path.iter().cloned());
                    let origin = functions.get(start).unwrap_or(f);
                    issues.push(LoadIssue {
                        file: origin.file.clone(),
                        line: Some(origin.line),
                        message: format!(
                            "recursive function (not allowed in Rego): {}",
                            shown.join(" -> ")
                        ),
                    });
                    stack.clear();
                    break;
                }
                if functions.contains_key(next) && seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    issues
}

/// Blank out string literals and comments so `sprintf("f(%v)")` is not read as a call.
fn strip_strings_and_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(' ');
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                    out.push(' ');
                }
            }
            '`' => {
                out.push(' ');
                for d in chars.by_ref() {
                    if d == '`' {
                        break;
                    }
                    out.push(' ');
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(modules: &[(&str, &str)]) -> Engine {
        let mut e = Engine::new();
        for (path, text) in modules {
            e.add_policy((*path).into(), (*text).into()).unwrap();
        }
        e
    }

    #[test]
    fn direct_and_indirect_recursion_is_found_through_imports() {
        let mut e = engine(&[
            (
                "a.rego",
                "package a\nimport data.lib.b as bee\nf(x) := y if y := bee.g(x)\n",
            ),
            (
                "b.rego",
                "package lib.b\ng(x) := y if y := data.a.f(x)\nh(x) := h(x)\n",
            ),
        ]);
        let issues = find_recursion(&mut e);
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(issues.len(), 2, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("data.a.f -> data.lib.b.g -> data.a.f")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.starts_with("b.rego:3:")), "{text:?}");
    }

    #[test]
    fn calls_in_strings_and_comments_and_other_packages_are_not_recursion() {
        let mut e = engine(&[
            (
                "a.rego",
                "package a\nf(x) := sprintf(\"f(%v)\", [x]) # f(x)\ng(x) := data.b.g(x)\n",
            ),
            ("b.rego", "package b\ng(x) := x + 1\n"),
        ]);
        assert!(find_recursion(&mut e).is_empty());
    }
}
