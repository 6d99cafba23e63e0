//! Turning source files into Rego modules: role of each file, Rego v1/v0 detection, and error
//! locations (`file:line`).

use regorus::Engine;

use super::{LoadIssue, SourceFile};

/// What a file is for, decided by its name and package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `*_test.rego`: unit tests, never served.
    Test,
    /// `package lib` or `package lib.*`: helpers shared by every policy.
    Library,
    /// Any other `.rego`: a policy, with metadata in the YAML file beside it.
    Policy,
}

pub fn is_test_file(path: &str) -> bool {
    path.ends_with("_test.rego")
}

pub fn is_rego(path: &str) -> bool {
    path.ends_with(".rego")
}

pub fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// The metadata files that may describe the policy at `rego_path`.
pub fn metadata_paths(rego_path: &str) -> [String; 2] {
    let stem = rego_path.strip_suffix(".rego").unwrap_or(rego_path);
    [format!("{stem}.yaml"), format!("{stem}.yml")]
}

/// Add one module to `engine`, returning its package path (`data.a.b`).
///
/// Rego v1 is tried first; a file that does not parse as v1 is tried as v0, so Gatekeeper
/// libraries written either way load unchanged. When both fail, the error reported is the one
/// from the dialect that got further into the file: that is the one the author was writing.
pub fn add_module(engine: &mut Engine, file: &SourceFile) -> Result<String, LoadIssue> {
    engine.set_rego_v0(false);
    let v1 = engine.add_policy(file.path.clone(), file.text.clone());
    let err_v1 = match v1 {
        Ok(pkg) => return Ok(pkg),
        Err(e) => e,
    };
    engine.set_rego_v0(true);
    let v0 = engine.add_policy(file.path.clone(), file.text.clone());
    engine.set_rego_v0(false);
    let err_v0 = match v0 {
        Ok(pkg) => return Ok(pkg),
        Err(e) => e,
    };
    let a = issue_from(&file.path, &err_v1);
    let b = issue_from(&file.path, &err_v0);
    let further = if b.line.unwrap_or(0) > a.line.unwrap_or(0) {
        b
    } else {
        a
    };
    Err(further)
}

/// The role of a parsed module.
pub fn role_of(path: &str, package: &str) -> Role {
    if is_test_file(path) {
        Role::Test
    } else if package == "data.lib" || package.starts_with("data.lib.") {
        Role::Library
    } else {
        Role::Policy
    }
}

/// A policy's package must be addressable as a plain dotted reference in the generated query.
pub fn plain_package(package: &str) -> bool {
    package.split('.').all(|part| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Convert a regorus error into `file:line: message`.
///
/// regorus formats errors as `path:line:col: error: message` followed by a source excerpt; the
/// excerpt is kept (it is what makes the message useful) but the location is lifted out.
pub fn issue_from(path: &str, err: &anyhow::Error) -> LoadIssue {
    let text = format!("{err:#}");
    let (file, line, message) = locate(&text).unwrap_or((path.to_owned(), None, text.clone()));
    LoadIssue {
        file,
        line,
        message,
    }
}

/// regorus errors look like `--> path:line:col`, a source excerpt, then `error: message`.
fn locate(text: &str) -> Option<(String, Option<u32>, String)> {
    let arrow = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))?;
    let mut parts = arrow.trim().rsplitn(3, ':');
    let _col = parts.next()?;
    let line = parts.next()?.parse::<u32>().ok()?;
    let file = parts.next()?.to_owned();
    let message = match text.rfind("error:") {
        Some(at) => text[at + "error:".len()..].trim().to_owned(),
        None => text.trim().to_owned(),
    };
    Some((file, Some(line), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path, text)
    }

    #[test]
    fn v1_and_v0_both_load() {
        let mut engine = Engine::new();
        let v1 = file(
            "v1.rego",
            "package a\nviolation contains {\"msg\": \"x\"} if input.x\n",
        );
        let v0 = file(
            "v0.rego",
            "package b\nviolation[{\"msg\": \"x\"}] { input.x }\n",
        );
        assert_eq!(add_module(&mut engine, &v1).unwrap(), "data.a");
        assert_eq!(add_module(&mut engine, &v0).unwrap(), "data.b");
    }

    #[test]
    fn parse_errors_carry_file_and_line() {
        let mut engine = Engine::new();
        let bad = file(
            "bad.rego",
            "package a\n\nviolation contains x if {\n  x := \n}\n",
        );
        let issue = add_module(&mut engine, &bad).unwrap_err();
        assert_eq!(issue.file, "bad.rego");
        assert!(matches!(issue.line, Some(4 | 5)), "{issue:?}");
        assert!(
            !issue.message.is_empty() && !issue.message.contains("-->"),
            "{issue:?}"
        );
    }

    #[test]
    fn roles_and_packages() {
        assert_eq!(role_of("x_test.rego", "data.x"), Role::Test);
        assert_eq!(role_of("lib.rego", "data.lib.sandbox"), Role::Library);
        assert_eq!(role_of("lib.rego", "data.library"), Role::Policy);
        assert!(plain_package("data.sandbox.runtime_class"));
        assert!(!plain_package("data.graph.1.0"));
    }
}
