//! The local cache directory: unwrapped run keys (sealed), the files cache
//! (sealed). Everything in it is an accelerator: a missing or damaged entry
//! costs work, never correctness, and an unusable directory falls back to
//! no cache with one warning.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::format::Id;

pub struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    /// Resolves the cache directory: `--cache-dir` / `STRONGROOM_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/strongroom`, else `$HOME/.cache/strongroom`.
    pub fn open(explicit: Option<&Path>) -> Cache {
        let dir = explicit.map(Path::to_path_buf).or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|x| PathBuf::from(x).join("strongroom"))
                .or_else(|| {
                    std::env::var_os("HOME")
                        .filter(|v| !v.is_empty())
                        .map(|h| PathBuf::from(h).join(".cache/strongroom"))
                })
        });
        let Some(dir) = dir else {
            crate::warn(
                "no cache directory (no --cache-dir, XDG_CACHE_HOME or HOME): working without a cache",
            );
            return Cache { dir: None };
        };
        let usable = std::fs::create_dir_all(&dir).is_ok() && tempfile::tempfile_in(&dir).is_ok();
        if !usable {
            crate::warn(&format!(
                "cache directory {} is not writable: working without a cache",
                dir.display()
            ));
            return Cache { dir: None };
        }
        Cache { dir: Some(dir) }
    }

    pub fn path(&self, repo: &Id, name: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(repo.to_hex()).join(name))
    }

    pub fn get(&self, repo: &Id, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(repo, name)?).ok()
    }

    /// Stores an entry atomically; failures are ignored (it is only a cache).
    pub fn put(&self, repo: &Id, name: &str, data: &[u8]) {
        let Some(path) = self.path(repo, name) else { return };
        let Some(parent) = path.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(parent) else {
            return;
        };
        if tmp.write_all(data).is_ok() {
            let _ = tmp.persist(&path);
        }
    }

    /// Removes the entries of a cache subdirectory not named `keep` or
    /// `keep.<extension>`.
    pub fn remove_others(&self, repo: &Id, subdir: &str, keep: &str) {
        let Some(dir) = self.path(repo, subdir) else {
            return;
        };
        let Ok(rd) = std::fs::read_dir(&dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name != keep && !name.starts_with(&format!("{keep}.")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
