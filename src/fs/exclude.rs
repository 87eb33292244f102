//! Exclude patterns: globs matched against whole paths or single names.

use std::path::Path;

use anyhow::Result;
use globset::{GlobSet, GlobSetBuilder};

/// What to leave out.
pub struct Excludes {
    /// Patterns with a `/`, matched against the whole path.
    paths: GlobSet,
    /// Patterns without one, matched against each name.
    names: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for p in patterns {
            let p = p.trim();
            if p.is_empty() || p.starts_with('#') {
                continue;
            }
            let glob = globset::GlobBuilder::new(p.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| crate::error::Exit::usage(format!("bad exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                paths.add(glob)
            } else {
                names.add(glob)
            };
        }
        Ok(Excludes {
            paths: paths.build()?,
            names: names.build()?,
        })
    }

    pub fn excluded(&self, path: &Path) -> bool {
        self.paths.is_match(path) || path.file_name().is_some_and(|n| self.names.is_match(n))
    }
}
