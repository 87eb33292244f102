//! Restore's plan: the snapshot's directories walked a level at a time,
//! each made as it is reached, their entries gathered for writing, and
//! which entry of each hard-link group is written and which are linked.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use rayon::prelude::*;

use crate::format::Id;
use crate::format::tree::{MAX_DEPTH, Node, NodeKind};
use crate::fs::beneath;

use super::Restorer;

/// One directory below the base, and what goes into it.
pub(super) struct Dir {
    pub(super) rel: PathBuf,
    /// Its own node, whose metadata is set last; `None` for the base and
    /// the directories leading to a restored path.
    pub(super) node: Option<Node>,
    pub(super) entries: Vec<Node>,
    /// Made by this restore (0700 and root's, or the user's, until its
    /// metadata is set last), rather than found there.
    pub(super) made: bool,
}

/// A hard link to make once every entry is written.
pub(super) struct Link {
    pub(super) dir: usize,
    pub(super) name: Vec<u8>,
    pub(super) to_dir: usize,
    pub(super) to_name: Vec<u8>,
}

/// An entry of a directory being walked: a directory made, to be walked
/// next, or anything else, to be written later.
enum Child {
    Entry(Node),
    Dir(Node, bool),
}

/// Adds directory `node`, made below directory `dir` of the plan, to the
/// plan, to be walked.
fn push_dir(plan: &mut Plan, dir: usize, node: Node, made: bool) -> (usize, Option<Id>) {
    let rel = plan.dirs[dir].rel.join(OsStr::from_bytes(&node.name));
    let subtree = node.subtree;
    plan.dirs.push(Dir {
        rel,
        node: Some(node),
        entries: Vec::new(),
        made,
    });
    (plan.dirs.len() - 1, subtree)
}

#[derive(Default)]
pub(super) struct Plan {
    pub(super) dirs: Vec<Dir>,
    pub(super) links: Vec<Link>,
}

impl Restorer<'_> {
    /// Walks a directory's tree, adding its entries to its directory of
    /// the plan and making subdirectories as it goes. It goes a level at a
    /// time: the listings of a level are read, and their subdirectories
    /// made, in parallel; the plan is then extended in the level's order,
    /// so it is the same however the threads ran.
    pub(super) fn plan_from(&self, start: (usize, Option<Id>), plan: &mut Plan) {
        let mut seen = HashMap::new();
        // No recursion, so no tree is deep enough to exhaust the stack.
        let mut level = vec![start];
        while !level.is_empty() {
            let walked: Vec<Vec<Child>> = level
                .par_iter()
                .map(|(dir, subtree)| self.walk(&plan.dirs[*dir].rel, *subtree))
                .collect();
            let mut next = Vec::new();
            for ((dir, _), children) in level.into_iter().zip(walked) {
                for child in children {
                    match child {
                        Child::Entry(node) => self.place(node, dir, plan, &mut seen),
                        Child::Dir(node, made) => next.push(push_dir(plan, dir, node, made)),
                    }
                }
            }
            level = next;
        }
    }

    /// Reads the listing of the directory at `rel` and makes its
    /// subdirectories. What fails is reported and left out.
    fn walk(&self, rel: &Path, subtree: Option<Id>) -> Vec<Child> {
        let Some(tree_id) = subtree else { return Vec::new() };
        let tree = match self.reader.read_tree(&tree_id) {
            Ok(t) => t,
            Err(e) => {
                self.error(rel, &e.context("reading its directory listing"));
                return Vec::new();
            }
        };
        let fd = if tree.nodes.iter().any(|n| n.kind == NodeKind::Dir) {
            match beneath::open_dir(self.base, rel) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    self.error(rel, &anyhow!(e).context("opening the directory"));
                    return Vec::new();
                }
            }
        } else {
            None
        };
        let mut children = Vec::with_capacity(tree.nodes.len());
        for child in tree.nodes {
            if child.kind != NodeKind::Dir {
                children.push(Child::Entry(child));
            } else if let Some(fd) = &fd
                && let Some(made) = self.make_subdir(rel, &child, fd.as_fd())
            {
                children.push(Child::Dir(child, made));
            }
        }
        children
    }

    /// Adds one entry to directory `dir` of the plan. A directory is made
    /// now and returned, to be walked; the rest are written later.
    pub(super) fn add(
        &self,
        node: Node,
        dir: usize,
        plan: &mut Plan,
        seen: &mut HashMap<(u64, u64), (usize, Vec<u8>)>,
        parent: BorrowedFd,
    ) -> Option<(usize, Option<Id>)> {
        if node.kind != NodeKind::Dir {
            self.place(node, dir, plan, seen);
            return None;
        }
        let made = self.make_subdir(&plan.dirs[dir].rel, &node, parent)?;
        Some(push_dir(plan, dir, node, made))
    }

    /// Puts a file or special entry into directory `dir` of the plan, or,
    /// if it is a hard link to one already there, into the links.
    fn place(
        &self,
        node: Node,
        dir: usize,
        plan: &mut Plan,
        seen: &mut HashMap<(u64, u64), (usize, Vec<u8>)>,
    ) {
        if node.nlink > 1 && node.inode != 0 {
            if let Some((to_dir, to_name)) = seen.get(&(node.dev, node.inode)) {
                plan.links.push(Link {
                    dir,
                    name: node.name.clone(),
                    to_dir: *to_dir,
                    to_name: to_name.clone(),
                });
                return;
            }
            seen.insert((node.dev, node.inode), (dir, node.name.clone()));
        }
        plan.dirs[dir].entries.push(node);
    }

    /// Makes subdirectory `node` of `parent` (at `rel`): whether this
    /// restore made it, or `None`, reported, if it could not.
    fn make_subdir(&self, rel: &Path, node: &Node, parent: BorrowedFd) -> Option<bool> {
        let rel = rel.join(OsStr::from_bytes(&node.name));
        if rel.components().count() > MAX_DEPTH {
            let e = anyhow!("directories nested deeper than {MAX_DEPTH} levels are refused as damage");
            self.error(&rel, &e);
            return None;
        }
        match beneath::make_dir(parent, OsStr::from_bytes(&node.name)) {
            Ok((r, made)) => {
                self.replaced(&rel, r);
                Some(made)
            }
            Err(e) => {
                self.error(&rel, &anyhow!(e).context("creating the directory"));
                None
            }
        }
    }
}
