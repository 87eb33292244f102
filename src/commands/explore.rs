//! What users reach for after a while: `diff` (what changed between two
//! snapshots), `find` (which snapshots hold a path matching a glob, newest
//! first) and `stats` (sizes, and what deduplication saves). Each reads
//! trees, so each needs the full key, but `stats` says what a writer key
//! can see. A tree shared by several snapshots (its id is the keyed hash of
//! its content) is read and summed once.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::cli::{DiffArgs, FindArgs};
use crate::error::Exit;
use crate::escape;
use crate::format::tree::{Extent, MAX_DEPTH, Node, NodeKind};
use crate::format::{BlobKind, Id};
use crate::keys::Key;
use crate::repository::reader::Reader;

use super::{Ctx, format_time};

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Entries a command visits at most: trees are shared, so hostile ones can
/// name one directory from two places at every level and make a walk
/// without memory exponential; this bounds it with one sentence.
const MAX_VISITS: u64 = 100_000_000;
/// Matches `find` keeps at most.
const MAX_MATCHES: usize = 20_000_000;

thread_local! {
    static VISITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn tree_nodes(reader: &Reader, tree: Option<Id>, path: &[u8], depth: usize) -> Result<Vec<Node>> {
    if depth > MAX_DEPTH {
        return Err(anyhow::anyhow!(
            "{}: directories nested deeper than {MAX_DEPTH} levels are damage",
            escape::bytes(path)
        ));
    }
    let Some(t) = tree else {
        return Ok(Vec::new());
    };
    let nodes = reader
        .read_tree(&t)
        .with_context(|| {
            format!(
                "reading directory {}",
                escape::bytes(if path.is_empty() { b"/" } else { path })
            )
        })?
        .nodes;
    let visits = VISITS.with(|v| {
        v.set(v.get().saturating_add(1 + nodes.len() as u64));
        v.get()
    });
    if visits > MAX_VISITS {
        return Err(anyhow::anyhow!(
            "more than {MAX_VISITS} entries visited: the trees are too large to walk here, or hostile"
        ));
    }
    Ok(nodes)
}

// ---------------------------------------------------------------- diff

#[derive(Serialize)]
struct Change {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    /// What differs: `content`, `type`, `mode`, `owner`, `mtime`, `xattrs`,
    /// `target`, `device`.
    what: Vec<&'static str>,
}

#[derive(Default, Serialize)]
struct DiffSummary {
    added: usize,
    removed: usize,
    changed: usize,
    bytes_added: u64,
    bytes_removed: u64,
}

#[derive(Default)]
struct Diff {
    added: Vec<Change>,
    removed: Vec<Change>,
    changed: Vec<Change>,
    summary: DiffSummary,
}

fn differences(a: &Node, b: &Node) -> Vec<&'static str> {
    let mut what = Vec::new();
    if a.kind != b.kind {
        what.push("type");
        return what;
    }
    if a.content != b.content || a.size != b.size {
        what.push("content");
    }
    if a.mode != b.mode {
        what.push("mode");
    }
    if a.uid != b.uid || a.gid != b.gid || a.user != b.user || a.group != b.group {
        what.push("owner");
    }
    if a.kind != NodeKind::Dir && a.mtime != b.mtime {
        what.push("mtime");
    }
    if a.xattrs != b.xattrs {
        what.push("xattrs");
    }
    if a.target != b.target {
        what.push("target");
    }
    if a.rdev != b.rdev {
        what.push("device");
    }
    what
}

impl Diff {
    /// Records `node` at `path` and everything under it as added or removed.
    fn whole(&mut self, reader: &Reader, node: &Node, path: &[u8], added: bool, depth: usize) -> Result<()> {
        let c = Change {
            path: escape::bytes(path),
            kind: kind_name(node.kind),
            what: Vec::new(),
        };
        if added {
            self.summary.added += 1;
            self.summary.bytes_added = self
                .summary
                .bytes_added
                .saturating_add(node.size * (node.kind == NodeKind::File) as u64);
            self.added.push(c);
        } else {
            self.summary.removed += 1;
            self.summary.bytes_removed = self
                .summary
                .bytes_removed
                .saturating_add(node.size * (node.kind == NodeKind::File) as u64);
            self.removed.push(c);
        }
        if node.kind == NodeKind::Dir {
            for n in tree_nodes(reader, node.subtree, path, depth + 1)? {
                self.whole(reader, &n, &join(path, &n.name), added, depth + 1)?;
            }
        }
        Ok(())
    }

    fn trees(
        &mut self,
        reader: &Reader,
        a: Option<Id>,
        b: Option<Id>,
        path: &[u8],
        depth: usize,
    ) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let (na, nb) = (
            tree_nodes(reader, a, path, depth)?,
            tree_nodes(reader, b, path, depth)?,
        );
        let (mut i, mut j) = (0, 0);
        // Names are sorted and unique in a canonical tree.
        while i < na.len() || j < nb.len() {
            let order = match (na.get(i), nb.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.whole(reader, &na[i], &join(path, &na[i].name), false, depth)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.whole(reader, &nb[j], &join(path, &nb[j].name), true, depth)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (&na[i], &nb[j]);
                    let p = join(path, &x.name);
                    let what = differences(x, y);
                    if what.contains(&"type") {
                        self.whole(reader, x, &p, false, depth)?;
                        self.whole(reader, y, &p, true, depth)?;
                    } else {
                        if !what.is_empty() {
                            self.summary.changed += 1;
                            self.changed.push(Change {
                                path: escape::bytes(&p),
                                kind: kind_name(y.kind),
                                what,
                            });
                        }
                        if x.kind == NodeKind::Dir {
                            self.trees(reader, x.subtree, y.subtree, &p, depth + 1)?;
                        }
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }
}

pub fn run_diff(ctx: &Ctx, a: DiffArgs) -> Result<()> {
    let key = ctx.load_key()?;
    let full = super::prune::full_key(&key, "read what snapshots hold")?;
    let repo = ctx.open(&key)?;
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &full.shared.subkeys, &cache, false, "diff")?;
    let listing = ctx.list_snapshots(&repo, &full.shared, &cache)?;
    let first = listing.find(&a.first, a.host.as_deref())?;
    let second = listing.find(&a.second, a.host.as_deref())?;
    let reader = Reader::open(&repo, full, &cache)?;
    let mut d = Diff::default();
    d.trees(
        &reader,
        Some(first.catalog.tree),
        Some(second.catalog.tree),
        b"",
        0,
    )?;
    if ctx.global.json {
        return super::print_json(&serde_json::json!({
            "from": first.id.to_hex(),
            "to": second.id.to_hex(),
            "added": d.added,
            "removed": d.removed,
            "changed": d.changed,
            "summary": d.summary,
        }));
    }
    if ctx.global.quiet {
        return Ok(());
    }
    println!(
        "comparing snapshot {} ({}) with {} ({})",
        first.id.short(),
        format_time(&first.catalog.time, false),
        second.id.short(),
        format_time(&second.catalog.time, false)
    );
    let mut lines: Vec<(&str, char, &Change)> = Vec::new();
    lines.extend(d.removed.iter().map(|c| (c.path.as_str(), '-', c)));
    lines.extend(d.added.iter().map(|c| (c.path.as_str(), '+', c)));
    lines.extend(d.changed.iter().map(|c| (c.path.as_str(), 'M', c)));
    lines.sort_by(|x, y| x.0.cmp(y.0).then(x.1.cmp(&y.1)));
    for (path, mark, c) in lines {
        if c.what.is_empty() {
            println!("{mark}  {path}");
        } else {
            println!("{mark}  {path}  ({})", c.what.join(", "));
        }
    }
    let s = &d.summary;
    println!(
        "{} added ({}), {} removed ({}), {} changed",
        s.added,
        crate::progress::bytes(s.bytes_added),
        s.removed,
        crate::progress::bytes(s.bytes_removed),
        s.changed
    );
    Ok(())
}

// ---------------------------------------------------------------- find

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
    let full = super::prune::full_key(&key, "read what snapshots hold")?;
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
        return super::print_json(&v);
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

// ---------------------------------------------------------------- stats

#[derive(Clone, Copy, Default)]
struct Totals {
    files: u64,
    dirs: u64,
    bytes: u64,
}

fn totals(
    reader: &Reader,
    tree: Id,
    depth: usize,
    memo: &mut HashMap<Id, Totals>,
    blobs: &mut HashSet<(Id, BlobKind)>,
) -> Result<Totals> {
    if let Some(t) = memo.get(&tree) {
        return Ok(*t);
    }
    blobs.insert((tree, BlobKind::Tree));
    let mut t = Totals::default();
    for n in tree_nodes(reader, Some(tree), b"", depth)? {
        match n.kind {
            NodeKind::Dir => {
                t.dirs += 1;
                if let Some(sub) = n.subtree {
                    let s = totals(reader, sub, depth + 1, memo, blobs)?;
                    t.files = t.files.saturating_add(s.files);
                    t.dirs = t.dirs.saturating_add(s.dirs);
                    t.bytes = t.bytes.saturating_add(s.bytes);
                }
            }
            _ => {
                t.files = t.files.saturating_add(1);
                if n.kind == NodeKind::File {
                    t.bytes = t.bytes.saturating_add(n.size);
                }
                for e in &n.content {
                    if let Extent::Data { id, .. } = e {
                        blobs.insert((*id, BlobKind::Data));
                    }
                }
            }
        }
    }
    memo.insert(tree, t);
    Ok(t)
}

pub fn run_stats(ctx: &Ctx) -> Result<()> {
    let key = ctx.load_key()?;
    let shared = key.shared();
    let repo = ctx.open(&key)?;
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &shared.subkeys, &cache, false, "stats")?;
    let listing = ctx.list_snapshots(&repo, shared, &cache)?;
    let mut stored = 0u64;
    let mut objects = 0u64;
    for kind in [
        crate::backend::Kind::Packs,
        crate::backend::Kind::Index,
        crate::backend::Kind::Keys,
        crate::backend::Kind::Snapshots,
    ] {
        for l in repo.backend.list(kind)? {
            stored += l.size;
            objects += 1;
        }
    }
    let mut v = serde_json::json!({
        "snapshots": listing.snapshots.len(),
        "refused_snapshots": listing.refused.len(),
        "stored_bytes": stored,
        "objects": objects,
    });
    if let Key::Full(full) = &key {
        let reader = Reader::open(&repo, full, &cache)?;
        let mut memo = HashMap::new();
        let mut blobs = HashSet::new();
        let mut sum = Totals::default();
        for s in &listing.snapshots {
            let t = totals(&reader, s.catalog.tree, 0, &mut memo, &mut blobs)?;
            sum.files = sum.files.saturating_add(t.files);
            sum.dirs = sum.dirs.saturating_add(t.dirs);
            sum.bytes = sum.bytes.saturating_add(t.bytes);
        }
        let (mut raw, mut sealed) = (0u64, 0u64);
        for (id, kind) in &blobs {
            if let Some(l) = reader.index.find_location(id, |l| l.entry.kind == *kind) {
                raw = raw.saturating_add(l.entry.raw_length as u64);
                sealed = sealed.saturating_add(l.entry.length as u64);
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        v["files"] = sum.files.into();
        v["dirs"] = sum.dirs.into();
        v["logical_bytes"] = sum.bytes.into();
        v["unique_blobs"] = (blobs.len() as u64).into();
        v["unique_raw_bytes"] = raw.into();
        v["unique_stored_bytes"] = sealed.into();
        v["deduplication_ratio"] = ratio(sum.bytes, raw).into();
        v["compression_ratio"] = ratio(raw, sealed).into();
    }
    if ctx.global.json {
        return super::print_json(&v);
    }
    if ctx.global.quiet {
        return Ok(());
    }
    let b = |k: &str| crate::progress::bytes(v[k].as_u64().unwrap_or(0));
    println!("snapshots          {}", v["snapshots"]);
    if let Some(files) = v["files"].as_u64() {
        println!(
            "files              {files} in {} directories, over all snapshots",
            v["dirs"]
        );
        println!(
            "logical size       {}  (what restoring every snapshot would write)",
            b("logical_bytes")
        );
        println!(
            "unique data        {}  in {} blobs, {} stored",
            b("unique_raw_bytes"),
            v["unique_blobs"],
            b("unique_stored_bytes")
        );
        println!(
            "deduplication      {:.2}x  compression {:.2}x",
            v["deduplication_ratio"].as_f64().unwrap_or(0.0),
            v["compression_ratio"].as_f64().unwrap_or(0.0)
        );
    } else {
        println!("(a writer key cannot read trees: sizes of contents are not shown)");
    }
    println!(
        "stored size        {}  in {} objects",
        b("stored_bytes"),
        v["objects"]
    );
    Ok(())
}
