//! The root and the virtual directories: `snapshots/<time>`, `latest`,
//! `ids/<prefix>`, `hosts/<host>/…` and `tags/<tag>/…`, numbered from 1 in
//! a fixed order; or, for one snapshot, its tree at the mount point.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};

use super::inode::{Identity, ROOT};
use super::{Entry, MountFs, Place, Root, Stored, VirtualDir};
use crate::format::tree::check_name;

struct Builder<'a> {
    fs: &'a MountFs,
    next: u64,
}

impl Builder<'_> {
    fn number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn dir(&mut self, ino: u64, name: &str, parent: u64, children: Vec<(Vec<u8>, u64)>) {
        self.fs.table.put(
            ino,
            Entry::Dir(VirtualDir {
                name: name.as_bytes().to_vec(),
                parent,
                children,
            }),
        );
    }

    fn link(&mut self, name: &str, parent: u64, target: String) -> (Vec<u8>, u64) {
        let ino = self.number();
        self.fs.table.put(
            ino,
            Entry::Link {
                name: name.as_bytes().to_vec(),
                parent,
                target: target.into_bytes(),
            },
        );
        (name.as_bytes().to_vec(), ino)
    }

    fn snapshot_root(&mut self, ino: u64, snapshot: usize, name: &str, parent: u64, view: &str) {
        let s = &self.fs.snapshots[snapshot];
        self.fs
            .table
            .put(ino, snapshot_root(s, snapshot, name, parent, view));
    }
}

fn snapshot_root(
    s: &crate::repository::snapshots::Snapshot,
    snapshot: usize,
    name: &str,
    parent: u64,
    view: &str,
) -> Entry {
    let mut node = crate::commands::root_node(s.catalog.tree);
    node.mtime = s.catalog.time;
    node.atime = s.catalog.time;
    node.ctime = s.catalog.time;
    Entry::Stored(Stored {
        snapshot: snapshot as u32,
        lookups: AtomicU32::new(0),
        tag: [0; 16],
        place: Place::Root(Box::new(Root {
            node: Arc::new(node),
            name: name.as_bytes().to_vec(),
            parent,
            key: Identity::root_key(&s.id, view),
        })),
        state: OnceLock::new(),
    })
}

/// Each snapshot's name in `snapshots/`: its time to the second, UTC, with
/// `-2`, `-3`… for later ids of the same second.
pub fn time_names(fs: &MountFs) -> Vec<String> {
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in fs.snapshots.iter().enumerate() {
        let mut t = s.catalog.time;
        t.nsec = 0;
        by_name
            .entry(crate::commands::format_time(&t, false))
            .or_default()
            .push(i);
    }
    let mut names = vec![String::new(); fs.snapshots.len()];
    for (base, mut members) in by_name {
        members.sort_by_key(|&i| fs.snapshots[i].id);
        for (n, i) in members.into_iter().enumerate() {
            names[i] = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{}", n + 1)
            };
        }
    }
    names
}

/// The shortest prefix of each id, at least 8 hex digits, that no other
/// snapshot shares.
pub fn id_prefixes(fs: &MountFs) -> Vec<String> {
    let hexes: Vec<String> = fs.snapshots.iter().map(|s| s.id.to_hex()).collect();
    // In sorted order an id shares its longest prefix with a neighbour:
    // one digit more than that sets it apart from all.
    let mut order: Vec<usize> = (0..hexes.len()).collect();
    order.sort_by(|&a, &b| hexes[a].cmp(&hexes[b]));
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let mut len = vec![8; hexes.len()];
    for pair in order.windows(2) {
        let n = common(&hexes[pair[0]], &hexes[pair[1]]) + 1;
        for &i in pair {
            len[i] = len[i].max(n).min(hexes[i].len());
        }
    }
    hexes.iter().zip(len).map(|(h, n)| h[..n].to_string()).collect()
}

/// The newest snapshot of `members` not dated in the future (else the
/// newest).
fn latest(fs: &MountFs, members: &[usize]) -> Option<usize> {
    members
        .iter()
        .rev()
        .find(|&&i| !fs.snapshots[i].future)
        .or(members.last())
        .copied()
}

/// Groups snapshots by host or tag, leaving out (with one warning each)
/// names that cannot be a directory's.
fn groups<'a>(
    fs: &'a MountFs,
    what: &str,
    names_of: impl Fn(usize) -> Vec<&'a str>,
) -> BTreeMap<&'a str, Vec<usize>> {
    let mut out: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut warned = HashSet::new();
    for i in 0..fs.snapshots.len() {
        for name in names_of(i) {
            if check_name(name.as_bytes()).is_err() {
                if warned.insert(name) {
                    crate::warn(&format!(
                        "the {what} name {name:?} cannot name a directory: its snapshots are left out of {what}s/"
                    ));
                }
                continue;
            }
            out.entry(name).or_default().push(i);
        }
    }
    out
}

impl MountFs {
    /// Enters the layout of every snapshot (oldest first in `snapshots`).
    pub fn build_layout(&self) {
        let mut b = Builder { fs: self, next: ROOT };
        let names = time_names(self);
        let (snaps, ids, hosts, tags) = (b.number(), b.number(), b.number(), b.number());
        b.dir(
            ROOT,
            "",
            ROOT,
            vec![
                (b"snapshots".to_vec(), snaps),
                (b"ids".to_vec(), ids),
                (b"hosts".to_vec(), hosts),
                (b"tags".to_vec(), tags),
            ],
        );
        let all: Vec<usize> = (0..self.snapshots.len()).collect();
        let mut children = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ino = b.number();
            b.snapshot_root(ino, i, name, snaps, "snapshots");
            children.push((name.as_bytes().to_vec(), ino));
        }
        if let Some(l) = latest(self, &all) {
            children.push(b.link("latest", snaps, names[l].clone()));
        }
        b.dir(snaps, "snapshots", ROOT, children);

        let mut children = Vec::new();
        for (i, prefix) in id_prefixes(self).iter().enumerate() {
            let ino = b.number();
            b.snapshot_root(ino, i, prefix, ids, "ids");
            children.push((prefix.as_bytes().to_vec(), ino));
        }
        b.dir(ids, "ids", ROOT, children);

        for (top, top_name, what) in [(hosts, "hosts", "host"), (tags, "tags", "tag")] {
            let grouped = if what == "host" {
                groups(self, what, |i| vec![self.snapshots[i].catalog.host.as_str()])
            } else {
                groups(self, what, |i| {
                    self.snapshots[i]
                        .catalog
                        .tags
                        .iter()
                        .map(String::as_str)
                        .collect()
                })
            };
            let mut top_children = Vec::new();
            for (group, members) in grouped {
                let dir = b.number();
                let mut children: Vec<(Vec<u8>, u64)> = members
                    .iter()
                    .map(|&i| b.link(&names[i], dir, format!("../../snapshots/{}", names[i])))
                    .collect();
                if what == "host"
                    && let Some(l) = latest(self, &members)
                {
                    children.push(b.link("latest", dir, format!("../../snapshots/{}", names[l])));
                }
                b.dir(dir, group, top, children);
                top_children.push((group.as_bytes().to_vec(), dir));
            }
            b.dir(top, top_name, ROOT, top_children);
        }
    }

    /// Enters one snapshot's tree as the mount point's root.
    pub fn build_single(&self) {
        if !self.snapshots.is_empty() {
            self.table
                .put(ROOT, snapshot_root(&self.snapshots[0], 0, "", ROOT, "snapshots"));
        }
    }
}
