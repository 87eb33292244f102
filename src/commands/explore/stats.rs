//! `strongroom stats`: logical, unique and stored sizes, and what
//! deduplication and compression save.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use crate::format::tree::{Extent, NodeKind};
use crate::format::{BlobKind, Id};
use crate::keys::Key;
use crate::repository::reader::Reader;

use super::super::Ctx;
use super::tree_nodes;

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
        return crate::commands::print_json(&v);
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
