//! Printing a review: the exact AdmissionReview (json), a readable report (yaml), or prose (text).

use std::fmt::Write as _;
use std::io::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::{EndpointChoice, Outcome, ReviewArgs, ReviewOutput};

/// The parts of one answer a person reads, with the patch decoded (fields in reading order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnswerReport<'a> {
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    patch: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_annotations: Option<&'a Value>,
}

fn answer_report<'a>(answer: &'a Value, patch: &'a [Value]) -> AnswerReport<'a> {
    let at = |p: &str| answer.pointer(p);
    AnswerReport {
        allowed: at("/response/allowed") == Some(&Value::Bool(true)),
        code: at("/response/status/code"),
        message: at("/response/status/message"),
        warnings: at("/response/warnings"),
        patch,
        audit_annotations: at("/response/auditAnnotations"),
    }
}

/// `-o yaml`: one report per document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    object: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    mutate: Option<AnswerReport<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    validate: Option<AnswerReport<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patched_object: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    effective_pod: Option<Value>,
}

/// `--pod`: the effective pod, or why none was built (Null for kinds that have none).
fn effective_pod(o: &Outcome) -> Value {
    match &o.effective_pod {
        Some(Ok(pod)) => pod.clone(),
        Some(Err(why)) => json!({"error": why}),
        None => Value::Null,
    }
}

/// `-o json`: the server's AdmissionReview; with both endpoints, both of them.
fn json_value(o: &Outcome, args: &ReviewArgs) -> Value {
    match args.endpoint {
        EndpointChoice::Mutate => o.mutate.clone().unwrap_or(Value::Null),
        EndpointChoice::Validate => o.validate.clone().unwrap_or(Value::Null),
        EndpointChoice::Both => {
            let mut v = json!({
                "allowed": o.allowed,
                "mutate": o.mutate,
                "validate": o.validate,
            });
            if args.patched {
                v["patchedObject"] = o.patched.clone().unwrap_or(Value::Null);
            }
            if args.pod {
                v["effectivePod"] = effective_pod(o);
            }
            v
        }
    }
}

fn yaml_report<'a>(o: &'a Outcome, args: &ReviewArgs) -> Report<'a> {
    Report {
        object: &o.label,
        allowed: o.allowed,
        mutate: o.mutate.as_ref().map(|m| answer_report(m, &o.patch)),
        validate: o.validate.as_ref().map(|v| answer_report(v, &[])),
        patched_object: if args.patched {
            Some(o.patched.as_ref().unwrap_or(&Value::Null))
        } else {
            None
        },
        effective_pod: args.pod.then(|| effective_pod(o)),
    }
}

fn text_answer(out: &mut String, name: &str, answer: &Value, patch: &[Value]) {
    let r = answer.get("response").cloned().unwrap_or(Value::Null);
    let verdict = if r.get("allowed") == Some(&Value::Bool(true)) {
        "allowed".to_string()
    } else {
        let code = r.pointer("/status/code").and_then(Value::as_u64);
        format!("denied ({})", code.map_or("-".into(), |c| c.to_string()))
    };
    let _ = writeln!(out, "  {name:<9} {verdict}");
    if let Some(message) = r.pointer("/status/message").and_then(Value::as_str) {
        for line in message.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    for w in r
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "    warning: {}", w.as_str().unwrap_or_default());
    }
    for op in patch {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("?");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("?");
        match op.get("value").or_else(|| op.get("from")) {
            Some(v) => {
                let _ = writeln!(out, "    patch: {kind} {path} {v}");
            }
            None => {
                let _ = writeln!(out, "    patch: {kind} {path}");
            }
        }
    }
}

fn text(o: &Outcome, args: &ReviewArgs) -> String {
    let mut out = String::new();
    let verdict = if o.allowed { "ALLOWED" } else { "DENIED" };
    let _ = writeln!(out, "{}: {verdict}", o.label);
    if let Some(m) = &o.mutate {
        text_answer(&mut out, "mutate:", m, &o.patch);
        if o.patch.is_empty() && m.pointer("/response/allowed") == Some(&Value::Bool(true)) {
            out.push_str("    no changes\n");
        }
    }
    if let Some(v) = &o.validate {
        text_answer(&mut out, "validate:", v, &[]);
    }
    if args.patched {
        match &o.patched {
            Some(p) => {
                out.push_str("patched object:\n");
                for line in to_yaml(p).lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            None => out.push_str("patched object: (none: the request carries no object)\n"),
        }
    }
    if args.pod {
        match &o.effective_pod {
            Some(Ok(pod)) => {
                out.push_str("pod it will create, as mutated (what validation judged):\n");
                for line in to_yaml(pod).lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            Some(Err(why)) => {
                let _ = writeln!(out, "pod it will create: none can be built: {why}");
            }
            None => out
                .push_str("pod it will create: (only Sandboxes and SandboxTemplates make pods)\n"),
        }
    }
    out
}

fn to_yaml(v: &impl Serialize) -> String {
    serde_saphyr::to_string(v)
        .unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
}

/// Print one outcome; `separate` puts the format's document separator before it.
pub fn print(o: &Outcome, args: &ReviewArgs, separate: bool) {
    let body = match args.output {
        ReviewOutput::Json => {
            let mut s = serde_json::to_string_pretty(&json_value(o, args)).unwrap_or_default();
            s.push('\n');
            s
        }
        ReviewOutput::Yaml => {
            let mut s = if separate {
                "---\n".to_string()
            } else {
                String::new()
            };
            s.push_str(&to_yaml(&yaml_report(o, args)));
            s
        }
        ReviewOutput::Text => {
            let mut s = if separate {
                "\n".to_string()
            } else {
                String::new()
            };
            s.push_str(&text(o, args));
            s
        }
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(body.as_bytes());
}
