//! Reading the filesystem into trees and blobs: the archiver.
//!
//! Directories are walked depth-first; the entries of one directory, and
//! the chunks of one large file, are processed in parallel. Each directory
//! becomes one tree blob, so an unchanged directory serialises to the same
//! tree and is not stored again.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::chunker::Chunker;
use crate::format::manifest::Summary;
use crate::format::tree::{Extent, MAX_DEPTH, Node, NodeKind, TREE_VERSION, Tree};
use crate::format::{BlobKind, Id, Timestamp, encode};
use crate::repository::reader::Reader;
use crate::repository::writer::Writer;

use super::exclude::Excludes;
use super::filescache::{CachedFile, FilesCache, NewFilesCache};
use super::meta::{Names, Xattrs, node_from_stat, read_xattrs, read_xattrs_fd};
use super::place::{Place, Stat, read_dir_names};
use super::source::SourceError;

mod read;

/// Files whose mtime or ctime lie this close to the run's start may still be
/// changing within one timestamp tick: they are read and not remembered.
const GRANULARITY_NS: i128 = 1_000_000_000;

/// The snapshot a run compares with, readable with a full key.
pub struct ParentSnapshot<'a> {
    pub reader: &'a Reader<'a>,
    pub tree: Id,
    pub started: Timestamp,
}

pub struct Archiver<'a> {
    writer: &'a Writer<'a>,
    chunker: Chunker,
    excludes: Excludes,
    one_file_system: bool,
    names: Names,
    run_start: Timestamp,
    old_cache: FilesCache,
    /// With a full key: the parent snapshot's trees, consulted for files
    /// the files cache does not know.
    parent: Option<ParentSnapshot<'a>>,
    new_cache: Mutex<NewFilesCache>,
    /// Content of multiply-linked files already read, by (dev, inode).
    hardlinks: Mutex<HashMap<(u64, u64), Vec<Extent>>>,
    errors: Mutex<Vec<String>>,
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unchanged: AtomicU64,
    dirs: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
    /// Files named on stdout: 1 the new and modified, 2 also the unchanged.
    list: u8,
}

impl<'a> Archiver<'a> {
    pub fn new(
        writer: &'a Writer<'a>,
        chunker: Chunker,
        excludes: Excludes,
        one_file_system: bool,
        old_cache: FilesCache,
        parent: Option<ParentSnapshot<'a>>,
    ) -> Self {
        let new_cache = NewFilesCache::like(&old_cache);
        Archiver {
            writer,
            chunker,
            excludes,
            one_file_system,
            names: Names::default(),
            run_start: Timestamp::now(),
            old_cache,
            parent,
            new_cache: Mutex::new(new_cache),
            hardlinks: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
            files_new: AtomicU64::new(0),
            files_changed: AtomicU64::new(0),
            files_unchanged: AtomicU64::new(0),
            dirs: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            list: 0,
        }
    }

    /// Names files on stdout as they are stored, as `-v` (new and modified)
    /// and `-vv` (also unchanged) ask.
    pub fn list_files(mut self, level: u8) -> Self {
        self.list = level;
        self
    }

    fn listed(&self, level: u8, what: &str, path: &Path) {
        if self.list >= level {
            use std::io::Write;
            let _ = writeln!(io::stdout().lock(), "{what} {}", crate::escape::path(path));
        }
    }

    /// When this run started reading.
    pub fn started(&self) -> Timestamp {
        self.run_start
    }

    /// A one-line account of the work so far, for the progress display.
    pub fn progress_line(&self) -> String {
        let files = self.files_new.load(Ordering::Relaxed)
            + self.files_changed.load(Ordering::Relaxed)
            + self.files_unchanged.load(Ordering::Relaxed);
        format!(
            "{files} files, {} dirs, {} read, {} added",
            self.dirs.load(Ordering::Relaxed),
            crate::progress::bytes(self.bytes_read.load(Ordering::Relaxed)),
            crate::progress::bytes(self.writer.bytes_added.load(Ordering::Relaxed)),
        )
    }

    pub fn into_parts(self) -> (Summary, Vec<String>, NewFilesCache) {
        let summary = Summary {
            files_new: self.files_new.into_inner(),
            files_changed: self.files_changed.into_inner(),
            files_unchanged: self.files_unchanged.into_inner(),
            dirs: self.dirs.into_inner(),
            bytes_read: self.bytes_read.into_inner(),
            bytes_total: self.bytes_total.into_inner(),
            bytes_added: 0,
            blobs_added: 0,
        };
        let errors = self.errors.into_inner().unwrap_or_else(|e| e.into_inner());
        (
            summary,
            errors,
            self.new_cache.into_inner().unwrap_or_else(|e| e.into_inner()),
        )
    }

    fn error(&self, path: &Path, err: impl std::fmt::Display) {
        let msg = format!("{}: {err}", path.display());
        crate::warn(&msg);
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    }

    /// Archives absolute paths under one root tree, with the real metadata
    /// of every directory on the way to them.
    pub fn archive_paths(&self, paths: &[PathBuf]) -> Result<Id> {
        #[derive(Default)]
        struct Dir {
            children: BTreeMap<Vec<u8>, Dir>,
            whole: bool,
        }
        let mut root = Dir::default();
        for p in paths {
            let mut d = &mut root;
            for c in p.components().skip(1) {
                d = d.children.entry(c.as_os_str().as_bytes().to_vec()).or_default();
            }
            d.whole = true;
        }
        fn build(a: &Archiver, path: &Path, d: &Dir, parent: Option<Id>) -> Result<Id> {
            let before = a.parent_nodes(parent);
            let mut nodes = Vec::new();
            for (name, child) in &d.children {
                let cpath = path.join(std::ffi::OsStr::from_bytes(name));
                let was = before.get(name);
                if child.whole {
                    let depth = cpath.components().count() - 1;
                    if let Some(n) = a.entry(Place::top(&cpath), None, was, depth)? {
                        nodes.push(n);
                    }
                    continue;
                }
                let meta = Place::top(&cpath)
                    .lstat()
                    .with_context(|| format!("reading {}", cpath.display()))?;
                let mut n = node_from_stat(std::ffi::OsStr::from_bytes(name), &meta, &a.names);
                n.xattrs = read_xattrs(&cpath).unwrap_or_default();
                n.subtree = Some(build(a, &cpath, child, was.and_then(|w| w.subtree))?);
                nodes.push(n);
            }
            a.store_tree(nodes)
        }
        let parent_root = self.parent.as_ref().map(|p| p.tree);
        if root.whole {
            let root = Place::top(Path::new("/"));
            let fd = root
                .lstat()
                .and_then(|meta| root.open_dir(&meta))
                .context("opening /")?;
            return self.dir_tree(root.path, fd, None, parent_root, 0);
        }
        build(self, Path::new("/"), &root, parent_root)
    }

    fn store_tree(&self, mut nodes: Vec<Node>) -> Result<Id> {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        self.dirs.fetch_add(1, Ordering::Relaxed);
        let tree = Tree {
            version: TREE_VERSION,
            nodes,
        };
        self.writer.add_blob(BlobKind::Tree, &encode(&tree))
    }

    /// The entries of a parent snapshot's directory, by name; empty without
    /// a full key, a parent, or a readable tree (it is only an accelerator).
    fn parent_nodes(&self, tree: Option<Id>) -> HashMap<Vec<u8>, Node> {
        let (Some(ParentSnapshot { reader, .. }), Some(tree)) = (&self.parent, tree) else {
            return HashMap::new();
        };
        match reader.read_tree(&tree) {
            Ok(t) => t.nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// The tree of an open directory's entries; `depth` directories deep.
    fn dir_tree(
        &self,
        path: &Path,
        fd: OwnedFd,
        dev: Option<u64>,
        parent: Option<Id>,
        depth: usize,
    ) -> Result<Id> {
        let before = self.parent_nodes(parent);
        let entries = match read_dir_names(&fd) {
            Ok(entries) => entries,
            Err(e) => {
                self.error(path, e);
                return self.store_tree(Vec::new());
            }
        };
        let nodes: Vec<Option<Node>> = entries
            .par_iter()
            .map(|name| {
                let path = path.join(name);
                let place = Place::within(fd.as_fd(), &path);
                self.entry(place, dev, before.get(name.as_bytes()), depth + 1)
            })
            .collect::<Result<_>>()?;
        self.store_tree(nodes.into_iter().flatten().collect())
    }

    /// One entry, `depth` directories deep; `None` if excluded or
    /// unreadable (the latter reported).
    fn entry(
        &self,
        place: Place,
        parent_dev: Option<u64>,
        was: Option<&Node>,
        depth: usize,
    ) -> Result<Option<Node>> {
        let path = place.path;
        if self.excludes.excluded(path) {
            return Ok(None);
        }
        let meta = match place.lstat() {
            Ok(m) => m,
            Err(e) => {
                self.error(path, e);
                return Ok(None);
            }
        };
        let name = path.file_name().unwrap_or(path.as_os_str());
        let mut node = node_from_stat(name, &meta, &self.names);
        match node.kind {
            NodeKind::Dir => {
                node.size = 0;
                let fd = match place.open_dir(&meta) {
                    Ok(fd) => fd,
                    Err(e) => {
                        self.error(path, e);
                        node.subtree = Some(self.store_tree(Vec::new())?);
                        return Ok(Some(node));
                    }
                };
                node.xattrs = self.xattrs(path, read_xattrs_fd(fd.as_fd())).unwrap_or_default();
                let crosses = self.one_file_system && parent_dev.is_some_and(|d| d != meta.dev);
                node.subtree = Some(if crosses {
                    self.store_tree(Vec::new())?
                } else if depth >= MAX_DEPTH {
                    self.error(
                        path,
                        format!(
                            "nested more than {MAX_DEPTH} directories deep; its entries are not backed up"
                        ),
                    );
                    self.store_tree(Vec::new())?
                } else {
                    self.dir_tree(path, fd, Some(meta.dev), was.and_then(|w| w.subtree), depth)?
                });
            }
            NodeKind::Symlink => {
                node.target = match place.read_link() {
                    Ok(t) => t,
                    Err(e) => {
                        self.error(path, e);
                        return Ok(None);
                    }
                };
                node.xattrs = self.xattrs(path, place.xattrs_of_other()).unwrap_or_default();
            }
            NodeKind::File => {
                self.bytes_total.fetch_add(meta.size, Ordering::Relaxed);
                match self.file_content(place, &meta, was.filter(|w| w.kind == NodeKind::File)) {
                    Ok((c, x)) => (node.content, node.xattrs) = (c, x),
                    Err(e) => {
                        if e.downcast_ref::<SourceError>().is_some() {
                            self.error(path, format!("{e:#}"));
                            return Ok(None);
                        }
                        return Err(e.context(format!("backing up {}", path.display())));
                    }
                }
            }
            _ => node.xattrs = self.xattrs(path, place.xattrs_of_other()).unwrap_or_default(),
        }
        Ok(Some(node))
    }

    /// An entry's xattrs as read; `None` (reported) if they could not be.
    fn xattrs(&self, path: &Path, read: io::Result<Xattrs>) -> Option<Xattrs> {
        read.map_err(|e| self.error(path, format!("reading extended attributes: {e}")))
            .ok()
    }

    /// A file's content and xattrs: as the files cache (or the parent
    /// snapshot) has them if the file is unchanged, else read. Setting or
    /// removing an xattr changes the ctime, so the cached xattrs are as
    /// current as the cached content.
    fn file_content(&self, place: Place, meta: &Stat, was: Option<&Node>) -> Result<(Vec<Extent>, Xattrs)> {
        let path = place.path;
        let key = path.as_os_str().as_bytes();
        let (mtime, ctime) = (meta.mtime, meta.ctime);
        let settled = self.run_start.as_nanos() - mtime.as_nanos().max(ctime.as_nanos()) > GRANULARITY_NS;
        let fresh = CachedFile {
            size: meta.size,
            mtime,
            ctime,
            inode: meta.ino,
            content: Vec::new(),
            xattrs: Vec::new(),
        };
        // The parent snapshot's xattrs are not used: it does not say
        // whether they could be read.
        let from_parent = || {
            was.filter(|w| self.settled_in_parent(w)).map(|w| CachedFile {
                size: w.size,
                mtime: w.mtime,
                ctime: w.ctime,
                inode: w.inode,
                content: w.content.clone(),
                xattrs: Vec::new(),
            })
        };
        let (old, encoded) = match self.old_cache.get(key) {
            Some((file, encoded)) => (Some(file), Some(encoded)),
            None => (from_parent(), None),
        };
        let known = old.is_some();
        let unchanged = |old: &CachedFile| {
            old.size == fresh.size
                && old.mtime == mtime
                && old.ctime == ctime
                && old.inode == fresh.inode
                && settled
                && old.content.iter().all(|e| match e {
                    Extent::Data { id, .. } => self.writer.has_blob(id),
                    Extent::Hole { .. } => true,
                })
        };
        if let Some(mut old) = old.filter(unchanged) {
            self.files_unchanged.fetch_add(1, Ordering::Relaxed);
            self.listed(2, "unchanged", path);
            match encoded {
                Some(e) => self
                    .new_cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_encoded(e),
                None => {
                    let file = place.open_file(meta).map_err(SourceError)?;
                    match self.xattrs(path, read_xattrs_fd(file.as_fd())) {
                        Some(x) => {
                            old.xattrs = x;
                            self.remember(key, &old);
                        }
                        None => old.xattrs = Vec::new(),
                    }
                }
            }
            return Ok((old.content, old.xattrs));
        }
        let file = place.open_file(meta).map_err(SourceError)?;
        let xattrs = self.xattrs(path, read_xattrs_fd(file.as_fd()));
        let link_key = (meta.dev, meta.ino);
        if meta.nlink > 1
            && let Some(c) = self
                .hardlinks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&link_key)
        {
            return Ok((c.clone(), xattrs.unwrap_or_default()));
        }
        let content = self.read_file(path, &file, meta)?;
        if known {
            self.files_changed.fetch_add(1, Ordering::Relaxed);
            self.listed(1, "modified", path);
        } else {
            self.files_new.fetch_add(1, Ordering::Relaxed);
            self.listed(1, "new", path);
        }
        if meta.nlink > 1 {
            self.hardlinks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(link_key, content.clone());
        }
        match xattrs {
            // Xattrs that could not be read are read again next time.
            Some(xattrs) if settled => {
                let file = CachedFile {
                    content,
                    xattrs,
                    ..fresh
                };
                self.remember(key, &file);
                Ok((file.content, file.xattrs))
            }
            x => Ok((content, x.unwrap_or_default())),
        }
    }

    /// Whether a parent snapshot's node had settled (its mtime and ctime
    /// more than a timestamp tick old) when that run began: only then does
    /// an equal mtime and ctime now mean nothing changed since.
    fn settled_in_parent(&self, w: &Node) -> bool {
        self.parent.as_ref().is_some_and(|p| {
            p.started.as_nanos() - w.mtime.as_nanos().max(w.ctime.as_nanos()) > GRANULARITY_NS
        })
    }

    fn remember(&self, key: &[u8], f: &CachedFile) {
        self.new_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key, f);
    }
}
