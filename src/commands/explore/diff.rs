//! `strongroom diff`: the paths added, removed and changed between two
//! snapshots, and what changed.

use anyhow::Result;
use serde::Serialize;

use crate::cli::DiffArgs;
use crate::escape;
use crate::format::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repository::reader::Reader;

use super::super::{Ctx, format_time};
use super::{join, kind_name, tree_nodes};

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
        let (count, bytes, list) = if added {
            (
                &mut self.summary.added,
                &mut self.summary.bytes_added,
                &mut self.added,
            )
        } else {
            (
                &mut self.summary.removed,
                &mut self.summary.bytes_removed,
                &mut self.removed,
            )
        };
        *count += 1;
        *bytes = bytes.saturating_add(node.size * (node.kind == NodeKind::File) as u64);
        list.push(c);
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
    let full = crate::commands::prune::full_key(&key, "read what snapshots hold")?;
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
        return crate::commands::print_json(&serde_json::json!({
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
