//! The kustomizations under `manifests/`: what they reference, read without kustomize itself, and
//! rendered with `kubectl kustomize` when kubectl is installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::schema::yaml_docs;

pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// Every `.yaml` file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn is_kustomization(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "kustomization.yaml")
}

/// What one kustomization refers to.
#[derive(Default)]
pub struct Refs {
    /// `resources` and `components`: files or directories with their own kustomization.
    pub resources: Vec<PathBuf>,
    /// Generator inputs and patch files: plain files, not objects, under the kustomization root.
    pub inputs: Vec<PathBuf>,
}

pub fn refs(kustomization: &Path) -> Refs {
    let dir = kustomization.parent().unwrap();
    let doc = yaml_docs(kustomization).remove(0);
    let mut refs = Refs::default();
    for key in ["resources", "components"] {
        for r in doc[key].as_array().into_iter().flatten() {
            refs.resources.push(dir.join(r.as_str().unwrap()));
        }
    }
    for generator in ["configMapGenerator", "secretGenerator"] {
        for g in doc[generator].as_array().into_iter().flatten() {
            for f in g["files"].as_array().into_iter().flatten() {
                let f = f.as_str().unwrap();
                // `key=path` names the key; the file is after the `=`.
                let file = f.split_once('=').map_or(f, |(_, p)| p);
                refs.inputs.push(dir.join(file));
            }
        }
    }
    for patch in doc["patches"].as_array().into_iter().flatten() {
        if let Some(p) = patch["path"].as_str() {
            refs.inputs.push(dir.join(p));
        }
    }
    refs
}

/// Files that are generator or patch inputs rather than objects.
pub fn input_files() -> BTreeSet<PathBuf> {
    yaml_files(&manifests_dir())
        .into_iter()
        .filter(|p| is_kustomization(p))
        .flat_map(|k| refs(&k).inputs)
        .collect()
}

/// The directories `kubectl apply -k` is documented for.
pub const ENTRY_POINTS: &[&str] = &[
    "",
    "base",
    "overlays/cert-manager",
    "overlays/manage-certs",
    "runtimeclasses",
    "examples",
];

pub fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `kubectl kustomize DIR`, as objects.
pub fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl kustomize {}: {e}", dir.display()));
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    super::schema::parse_docs(
        &String::from_utf8_lossy(&out.stdout),
        &format!("kubectl kustomize {}", dir.display()),
    )
}
