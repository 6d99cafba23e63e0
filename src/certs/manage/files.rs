//! Writing the serving pair into the cert directory in one atomic step, the way the kubelet
//! updates a Secret volume: the files go into a fresh `..<stamp>` directory, the `..data` symlink
//! is swapped to it with one rename, and `tls.crt` etc. are symlinks through `..data`. The
//! reload watcher therefore never reads a new certificate with an old key.

use std::path::Path;

use crate::certs::CertError;

const DATA: &str = "..data";

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> CertError + '_ {
    move |source| CertError::Write {
        path: path.to_owned(),
        source,
    }
}

/// Make `dir` hold exactly these contents under these names. Returns false when it already did.
pub fn write_atomic(dir: &Path, files: &[(&str, &[u8])]) -> Result<bool, CertError> {
    let unchanged = files
        .iter()
        .all(|(name, contents)| std::fs::read(dir.join(name)).is_ok_and(|c| c == *contents));
    if unchanged {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S%.9f"));
    let data_dir = dir.join(&stamp);
    std::fs::create_dir(&data_dir).map_err(write_err(&data_dir))?;
    for (name, contents) in files {
        let path = data_dir.join(name);
        std::fs::write(&path, contents).map_err(write_err(&path))?;
        #[cfg(unix)]
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(write_err(&path))?;
        }
    }
    swap(dir, &stamp, files)?;
    // Older generations are no longer reachable through ..data.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") && name != DATA && name != stamp && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(true)
}

#[cfg(unix)]
fn swap(dir: &Path, stamp: &str, files: &[(&str, &[u8])]) -> Result<(), CertError> {
    use std::os::unix::fs::symlink;
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(stamp, &tmp).map_err(write_err(&tmp))?;
    let data = dir.join(DATA);
    std::fs::rename(&tmp, &data).map_err(write_err(&data))?;
    for (name, _) in files {
        let link = dir.join(name);
        let is_link = link
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            // A plain file from an older layout: replace it by the link.
            let _ = std::fs::remove_file(&link);
            symlink(Path::new(DATA).join(name), &link).map_err(write_err(&link))?;
        }
    }
    Ok(())
}

/// Without symlinks: plain renames, one file at a time (the reloader's debounce covers the gap).
#[cfg(not(unix))]
fn swap(dir: &Path, stamp: &str, files: &[(&str, &[u8])]) -> Result<(), CertError> {
    for (name, _) in files {
        let from = dir.join(stamp).join(name);
        let to = dir.join(name);
        std::fs::copy(&from, &to).map_err(write_err(&to))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_atomically_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("tls");
        assert!(write_atomic(&d, &[("tls.crt", b"one"), ("tls.key", b"k1")]).unwrap());
        assert!(!write_atomic(&d, &[("tls.crt", b"one"), ("tls.key", b"k1")]).unwrap());
        assert!(write_atomic(&d, &[("tls.crt", b"two"), ("tls.key", b"k2")]).unwrap());
        assert_eq!(std::fs::read(d.join("tls.crt")).unwrap(), b"two");
        assert_eq!(std::fs::read(d.join("tls.key")).unwrap(), b"k2");
        let generations = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir() && e.file_name() != DATA)
            .count();
        assert_eq!(generations, 1, "old generations removed");
    }

    #[test]
    fn replaces_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), "old").unwrap();
        assert!(write_atomic(dir.path(), &[("tls.crt", b"new")]).unwrap());
        assert_eq!(std::fs::read(dir.path().join("tls.crt")).unwrap(), b"new");
    }
}
