//! `strongroom find`: which snapshots hold a path matching a glob, newest
//! first.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::cli::FindArgs;
use crate::error::Exit;
use crate::escape;
use crate::format::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repository::reader::Reader;

use super::super::{Ctx, format_time};
use super::{MAX_MATCHES, join, kind_name, tree_nodes};

#[derive(Clone, Serialize)]
struct Found {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: String,
}

/// Matches with their raw paths (relative to a tree, or absolute).
type Matches = Vec<(Vec<u8>, Found)>;

struct Finder<'a> {
    reader: &'a Reader<'a>,
    /// Patterns without `/`, matched against each name.
    names: GlobSet,
    /// Patterns with `/`, matched against the whole path.
    paths: GlobSet,
    /// Of each tree read, the matches of name patterns below it, with
    /// paths relative to it: the same tree in another snapshot, or at
    /// another place, costs nothing.
    memo: HashMap<Id, Arc<Matches>>,
    /// Of whole-path walks: the matches under a tree at a path (the same
    /// tree at the same place, night after night, is walked once).
    path_memo: HashMap<(Id, Vec<u8>), Arc<Matches>>,
    /// Matches held in the memos.
    stored: usize,
}

impl Finder<'_> {
    fn found(path: &[u8], n: &Node) -> Found {
        Found {
            path: escape::bytes(path),
            kind: kind_name(n.kind),
            size: n.size,
            mtime: format_time(&n.mtime, false),
        }
    }

    /// Name matches under a tree, relative to it.
    fn by_name(&mut self, tree: Id, depth: usize) -> Result<Arc<Matches>> {
        if let Some(m) = self.memo.get(&tree) {
            return Ok(m.clone());
        }
        let mut out = Vec::new();
        for n in tree_nodes(self.reader, Some(tree), b"", depth)? {
            if self.names.is_match(Path::new(OsStr::from_bytes(&n.name))) {
                out.push((n.name.clone(), Self::found(&n.name, &n)));
            }
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                for (rel, f) in self.by_name(sub, depth + 1)?.iter() {
                    out.push((join(&n.name, rel)[..].to_vec(), f.clone()));
                }
            }
        }
        self.keep(out.len())?;
        let out = Arc::new(out);
        self.memo.insert(tree, out.clone());
        Ok(out)
    }

    fn keep(&mut self, n: usize) -> Result<()> {
        self.stored += n;
        if self.stored > MAX_MATCHES {
            return Err(Exit::usage(format!(
                "more than {MAX_MATCHES} matches: narrow the patterns (or the trees are hostile)"
            )));
        }
        Ok(())
    }

    /// Whole-path matches under a tree at `path`.
    fn by_path(&mut self, tree: Id, path: &[u8], depth: usize) -> Result<Arc<Matches>> {
        let key = (tree, path.to_vec());
        if let Some(m) = self.path_memo.get(&key) {
            return Ok(m.clone());
        }
        let mut out = Vec::new();
        for n in tree_nodes(self.reader, Some(tree), path, depth)? {
            let p = join(path, &n.name);
            if self.paths.is_match(Path::new(OsStr::from_bytes(&p))) {
                out.push((p.clone(), Self::found(&p, &n)));
            }
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                out.extend(self.by_path(sub, &p, depth + 1)?.iter().cloned());
            }
        }
        self.keep(out.len())?;
        let out = Arc::new(out);
        self.path_memo.insert(key, out.clone());
        Ok(out)
    }
}

pub fn run_find(ctx: &Ctx, a: FindArgs) -> Result<()> {
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    let (mut any_name, mut any_path) = (false, false);
    for p in &a.patterns {
        let g = GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Exit::usage(format!("{p:?} is not a glob pattern: {e}")))?;
        if p.contains('/') {
            paths.add(g);
            any_path = true;
        } else {
            names.add(g);
            any_name = true;
        }
    }
    let key = ctx.load_key()?;
    let full = crate::commands::prune::full_key(&key, "read what snapshots hold")?;
    let repo = ctx.open(&key)?;
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &full.shared.subkeys, &cache, false, "find")?;
    let listing = ctx.list_snapshots(&repo, &full.shared, &cache)?;
    let reader = Reader::open(&repo, full, &cache)?;
    let mut finder = Finder {
        reader: &reader,
        names: names.build().context("building the patterns")?,
        paths: paths.build().context("building the patterns")?,
        memo: HashMap::new(),
        path_memo: HashMap::new(),
        stored: 0,
    };
    let mut results = Vec::new();
    for s in listing
        .snapshots
        .iter()
        .rev()
        .filter(|s| a.host.as_ref().is_none_or(|h| s.catalog.host == *h))
    {
        let mut found: Matches = Vec::new();
        if any_name {
            for (rel, f) in finder.by_name(s.catalog.tree, 0)?.iter() {
                let abs = join(b"", rel);
                found.push((
                    abs.clone(),
                    Found {
                        path: escape::bytes(&abs),
                        ..f.clone()
                    },
                ));
            }
        }
        if any_path {
            found.extend(finder.by_path(s.catalog.tree, b"", 0)?.iter().cloned());
        }
        if found.is_empty() {
            continue;
        }
        found.sort_by(|x, y| x.0.cmp(&y.0));
        found.dedup_by(|x, y| x.0 == y.0);
        results.push((s, found));
    }
    if ctx.global.json {
        let v: Vec<_> = results
            .iter()
            .map(|(s, f)| {
                serde_json::json!({
                    "id": s.id.to_hex(),
                    "short_id": s.id.short(),
                    "time": format_time(&s.catalog.time, true),
                    "host": s.catalog.host,
                    "matches": f.iter().map(|(_, m)| m).collect::<Vec<_>>(),
                })
            })
            .collect();
        return crate::commands::print_json(&v);
    }
    if !ctx.global.quiet {
        for (s, f) in &results {
            println!(
                "snapshot {} of {} (host {}):",
                s.id.short(),
                format_time(&s.catalog.time, false),
                escape::text(&s.catalog.host)
            );
            for (_, m) in f {
                println!("  {:<8} {:>12}  {}  {}", m.kind, m.size, m.mtime, m.path);
            }
        }
        println!("{} snapshot(s) hold a match", results.len());
    }
    Ok(())
}
