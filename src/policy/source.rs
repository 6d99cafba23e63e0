//! Where policy files come from: the set compiled into the binary, or a directory on disk
//! (typically a mounted ConfigMap).

use std::path::{Path, PathBuf};

use super::PolicyLoadError;

/// The project's `policies/` directory, captured at build time by `build.rs`.
const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/embedded_policies.rs"));

/// Deeper trees than this are refused rather than walked (symlink loops end here too).
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Embedded,
    Dir(PathBuf),
}

/// One file of a policy set; `path` is relative to the set's root, with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }
}

impl PolicySource {
    pub fn describe(&self) -> String {
        match self {
            PolicySource::Embedded => "embedded".into(),
            PolicySource::Dir(dir) => dir.display().to_string(),
        }
    }

    /// Every `.rego`, `.yaml` and `.yml` file of the set, sorted by path.
    pub fn read(&self) -> Result<Vec<SourceFile>, PolicyLoadError> {
        match self {
            PolicySource::Embedded => Ok(EMBEDDED
                .iter()
                .map(|(path, text)| SourceFile {
                    path: (*path).to_owned(),
                    text: (*text).to_owned(),
                })
                .collect()),
            PolicySource::Dir(dir) => read_dir(dir),
        }
    }
}

/// Read a policy directory.
///
/// Kubernetes ConfigMap volumes hold `..data -> ..2024_01_01_00_00_00.123` and visible top-level
/// symlinks into it; skipping every dot-entry and following symlinks reads each file exactly
/// once, from the generation the `..data` link currently points at.
pub fn read_dir(root: &Path) -> Result<Vec<SourceFile>, PolicyLoadError> {
    let mut files = Vec::new();
    walk(root, root, 0, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<SourceFile>,
) -> Result<(), PolicyLoadError> {
    let shown = |p: &Path| p.display().to_string();
    if depth > MAX_DEPTH {
        return Err(PolicyLoadError::one(
            shown(dir),
            None,
            format!("directory nesting deeper than {MAX_DEPTH} levels (symlink loop?)"),
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PolicyLoadError::one(shown(dir), None, format!("cannot read directory: {e}"))
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            PolicyLoadError::one(shown(dir), None, format!("cannot read directory: {e}"))
        })?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks, which is what ConfigMap volumes need.
        let meta = std::fs::metadata(&path)
            .map_err(|e| PolicyLoadError::one(shown(&path), None, format!("cannot stat: {e}")))?;
        if meta.is_dir() {
            walk(root, &path, depth + 1, out)?;
            continue;
        }
        let wanted = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rego" | "yaml" | "yml")
        );
        if !meta.is_file() || !wanted {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PolicyLoadError::one(shown(&path), None, format!("cannot read: {e}")))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        out.push(SourceFile { path: rel, text });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_set_holds_the_project_policies() {
        let files = PolicySource::Embedded.read().unwrap();
        assert!(files.iter().any(|f| f.path == "lib_sandbox.rego"));
        assert!(files.iter().any(|f| f.path.ends_with("_test.rego")));
    }

    #[cfg(unix)]
    #[test]
    fn configmap_layout_is_read_once_through_the_data_link() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let generation = dir.path().join("..2026_01_01_00_00_00.1");
        std::fs::create_dir(&generation).unwrap();
        std::fs::write(generation.join("a.rego"), "package a\n").unwrap();
        std::fs::write(generation.join("notes.txt"), "ignored").unwrap();
        symlink("..2026_01_01_00_00_00.1", dir.path().join("..data")).unwrap();
        symlink("..data/a.rego", dir.path().join("a.rego")).unwrap();
        symlink("..data/notes.txt", dir.path().join("notes.txt")).unwrap();
        let files = read_dir(dir.path()).unwrap();
        assert_eq!(
            files,
            vec![SourceFile {
                path: "a.rego".into(),
                text: "package a\n".into()
            }]
        );
    }

    #[test]
    fn subdirectories_are_read_and_missing_dirs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/x.rego"), "package lib.x\n").unwrap();
        let files = read_dir(dir.path()).unwrap();
        assert_eq!(files[0].path, "lib/x.rego");
        let err = read_dir(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("cannot read directory"), "{err}");
    }
}
