//! `strongroom ls` and `strongroom dump`: one directory's entries, or one
//! file's content, straight from the repository.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use anyhow::{Context, Result, anyhow};

use crate::cli::{DumpArgs, LsArgs};
use crate::error::Exit;
use crate::escape;
use crate::format::Id;
use crate::format::tree::{Extent, Node, NodeKind};
use crate::repository::reader::Reader;

use super::{Ctx, format_time};

/// The node at `path` inside a snapshot whose root tree is `root`.
pub fn lookup(reader: &Reader, root: Id, path: &Path) -> Result<Node> {
    let mut node = root_node(root);
    let mut walked = std::path::PathBuf::from("/");
    for c in path.components() {
        let name = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(n) => n,
            _ => {
                return Err(Exit::usage(format!(
                    "{}: paths inside a snapshot may not use `..`",
                    path.display()
                )));
            }
        };
        let tree_id = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) => t,
            _ => {
                return Err(Exit::usage(format!(
                    "{} is not a directory in the snapshot",
                    walked.display()
                )));
            }
        };
        let tree = reader
            .read_tree(&tree_id)
            .with_context(|| format!("reading directory {}", walked.display()))?;
        walked.push(name);
        node = tree
            .nodes
            .into_iter()
            .find(|n| n.name == name.as_bytes())
            .ok_or_else(|| Exit::usage(format!("{} does not exist in the snapshot", walked.display())))?;
    }
    Ok(node)
}

pub fn root_node(tree: Id) -> Node {
    let mut n = Node::new(b"", NodeKind::Dir, libc::S_IFDIR | 0o755);
    n.nlink = 2;
    n.subtree = Some(tree);
    n
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let m = n.mode;
    let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (m & x != 0, m & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    format!(
        "{t}{}{}{}{}{}{}{}{}{}",
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    )
}

pub fn run_ls(ctx: &Ctx, a: LsArgs) -> Result<()> {
    let key = ctx.load_key()?.into_full("list a snapshot's files")?;
    let repo = crate::repository::Repository::open(ctx.backend(&key.shared)?, &key.shared)?;
    let cache = ctx.cache();
    let listing = ctx.list_snapshots(&repo, &key.shared, &cache)?;
    let snap = listing.find(&a.snapshot, a.host.as_deref())?;
    let reader = Reader::open(&repo, &key, &cache)?;
    let path = a.path.unwrap_or_else(|| "/".into());
    let node = lookup(&reader, snap.catalog.tree, &path)?;
    let nodes = match (node.kind, node.subtree) {
        (NodeKind::Dir, Some(t)) => reader.read_tree(&t)?.nodes,
        _ => vec![node],
    };
    let mut out = std::io::stdout().lock();
    if ctx.global.json {
        let v: Vec<_> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": String::from_utf8_lossy(&n.name),
                    "type": format!("{:?}", n.kind).to_lowercase(),
                    "mode": n.mode & 0o7777,
                    "uid": n.uid, "gid": n.gid, "user": n.user, "group": n.group,
                    "size": n.size,
                    "mtime": format_time(&n.mtime, true),
                })
            })
            .collect();
        return super::print_json(&v);
    }
    for n in &nodes {
        let owner = n.user.as_deref().map_or_else(|| n.uid.to_string(), escape::text);
        let group = n.group.as_deref().map_or_else(|| n.gid.to_string(), escape::text);
        let size = match n.kind {
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                format!(
                    "{},{}",
                    libc::major(n.rdev as libc::dev_t),
                    libc::minor(n.rdev as libc::dev_t)
                )
            }
            _ => n.size.to_string(),
        };
        write!(
            out,
            "{} {:>8} {:>8} {:>12} {} ",
            mode_string(n),
            owner,
            group,
            size,
            format_time(&n.mtime, false)
        )?;
        // Names and targets are the writer's bytes: escaped for the terminal.
        write!(out, "{}", escape::bytes(&n.name))?;
        if n.kind == NodeKind::Symlink {
            write!(out, " -> {}", escape::bytes(&n.target))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

pub fn run_dump(ctx: &Ctx, a: DumpArgs) -> Result<()> {
    let key = ctx.load_key()?.into_full("read a file's content")?;
    let repo = crate::repository::Repository::open(ctx.backend(&key.shared)?, &key.shared)?;
    let cache = ctx.cache();
    let listing = ctx.list_snapshots(&repo, &key.shared, &cache)?;
    let snap = listing.find(&a.snapshot, a.host.as_deref())?;
    let reader = Reader::open(&repo, &key, &cache)?;
    let node = lookup(&reader, snap.catalog.tree, &a.path)?;
    if node.kind != NodeKind::File {
        return Err(Exit::usage(format!("{} is not a regular file", a.path.display())));
    }
    let mut out = std::io::stdout().lock();
    let zeros = vec![0u8; 1 << 20];
    for e in &node.content {
        match e {
            Extent::Data { id, .. } => {
                let data = reader
                    .read_blob(id, true)
                    .with_context(|| format!("reading {}", a.path.display()))?;
                out.write_all(&data)?;
            }
            Extent::Hole { len } => {
                let mut left = *len;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    out.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
            }
        }
    }
    out.flush().map_err(|e| anyhow!(e))
}
