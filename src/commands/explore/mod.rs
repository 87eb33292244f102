//! What users reach for after a while: `diff` (what changed between two
//! snapshots), `find` (which snapshots hold a path matching a glob, newest
//! first) and `stats` (sizes, and what deduplication saves). Each reads
//! trees, so each needs the full key, but `stats` says what a writer key
//! can see. A tree shared by several snapshots (its id is the keyed hash of
//! its content) is read and summed once.

mod diff;
mod find;
mod stats;

pub use diff::run_diff;
pub use find::run_find;
pub use stats::run_stats;

use anyhow::{Context, Result};

use crate::escape;
use crate::format::Id;
use crate::format::tree::{MAX_DEPTH, Node, NodeKind};
use crate::repository::reader::Reader;

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

pub(super) fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
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
pub(super) const MAX_MATCHES: usize = 20_000_000;

thread_local! {
    static VISITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

pub(super) fn tree_nodes(reader: &Reader, tree: Option<Id>, path: &[u8], depth: usize) -> Result<Vec<Node>> {
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
