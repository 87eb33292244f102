//! Writing a snapshot's tree back to the filesystem, exactly: content with
//! its holes, owners, modes (setuid/setgid/sticky included), xattrs and
//! ACLs, nanosecond times, hard links, devices and fifos.
//!
//! Three passes: walk the trees in order (creating directories and deciding
//! which entry of each hard-link group is written), write files and special
//! entries in parallel, then link the rest of each group and set directory
//! metadata deepest first. A damaged blob fails only the files that use it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};
use rayon::prelude::*;

use crate::format::Id;
use crate::format::tree::{Extent, Node, NodeKind};
use crate::repository::reader::Reader;

use super::meta;

pub struct Restorer<'a> {
    reader: &'a Reader<'a>,
    as_root: bool,
    errors: Mutex<Vec<String>>,
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

struct Plan {
    /// Entries to write, with their destination.
    entries: Vec<(PathBuf, Node)>,
    /// Hard links to make after the entries: (new path, existing path).
    links: Vec<(PathBuf, PathBuf)>,
    /// Directories whose metadata is set last, in creation order.
    dirs: Vec<(PathBuf, Node)>,
}

impl<'a> Restorer<'a> {
    pub fn new(reader: &'a Reader<'a>) -> Self {
        // SAFETY: geteuid cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        Restorer {
            reader,
            as_root,
            errors: Mutex::new(Vec::new()),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn error(&self, path: &Path, err: &anyhow::Error) {
        let msg = format!("restoring {}: {err:#}", path.display());
        eprintln!("error: {msg}");
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    }

    /// Restores `node` (a directory's entries when it is a directory) at `dest`.
    pub fn restore(&self, node: &Node, dest: &Path) -> Result<()> {
        let mut plan = Plan {
            entries: Vec::new(),
            links: Vec::new(),
            dirs: Vec::new(),
        };
        let mut seen = HashMap::new();
        self.plan(node, dest, &mut plan, &mut seen)?;
        let failed = Mutex::new(std::collections::HashSet::new());
        plan.entries.par_iter().for_each(|(path, node)| {
            if let Err(e) = self.write_entry(path, node) {
                self.error(path, &e);
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path.clone());
            }
        });
        let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
        for (new, existing) in &plan.links {
            if failed.contains(existing) {
                // A link to a damaged file would be damaged too: say so.
                self.error(
                    new,
                    &anyhow!("its hard link {} could not be restored", existing.display()),
                );
                continue;
            }
            if let Err(e) = std::fs::hard_link(existing, new) {
                self.error(
                    new,
                    &anyhow!(e).context(format!("linking to {}", existing.display())),
                );
            }
        }
        for (path, node) in plan.dirs.iter().rev() {
            if let Err(e) = self.set_metadata(path, node) {
                self.error(path, &e);
            }
        }
        Ok(())
    }

    fn plan(
        &self,
        node: &Node,
        dest: &Path,
        plan: &mut Plan,
        seen: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<()> {
        if node.kind != NodeKind::Dir {
            if node.nlink > 1 && node.inode != 0 {
                if let Some(first) = seen.get(&(node.dev, node.inode)) {
                    plan.links.push((dest.to_path_buf(), first.clone()));
                    return Ok(());
                }
                seen.insert((node.dev, node.inode), dest.to_path_buf());
            }
            plan.entries.push((dest.to_path_buf(), node.clone()));
            return Ok(());
        }
        if let Err(e) = std::fs::create_dir(dest)
            && (e.kind() != io::ErrorKind::AlreadyExists || !dest.is_dir())
        {
            self.error(dest, &anyhow!(e).context("creating the directory"));
            return Ok(());
        }
        // The snapshot's root is synthetic: the target keeps its own metadata.
        if !node.name.is_empty() {
            plan.dirs.push((dest.to_path_buf(), node.clone()));
        }
        let Some(tree_id) = node.subtree else {
            return Ok(());
        };
        let tree = match self.reader.read_tree(&tree_id) {
            Ok(t) => t,
            Err(e) => {
                self.error(dest, &e.context("reading its directory listing"));
                return Ok(());
            }
        };
        for child in &tree.nodes {
            if child.name.is_empty()
                || child.name == b"."
                || child.name == b".."
                || child.name.contains(&b'/')
            {
                self.error(
                    dest,
                    &anyhow!(
                        "tree {tree_id} holds an invalid name {:?}",
                        String::from_utf8_lossy(&child.name)
                    ),
                );
                continue;
            }
            self.plan(child, &dest.join(OsStr::from_bytes(&child.name)), plan, seen)?;
        }
        Ok(())
    }

    fn write_entry(&self, path: &Path, node: &Node) -> Result<()> {
        match node.kind {
            NodeKind::File => self.write_file(path, node)?,
            NodeKind::Symlink => std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), path)
                .context("creating the symlink")?,
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                meta::mknod(path, node.mode, node.rdev).context("creating the special file")?
            }
            NodeKind::Dir => unreachable!("directories are planned separately"),
        }
        self.set_metadata(path, node)
    }

    fn write_file(&self, path: &Path, node: &Node) -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .context("creating the file")?;
        let mut offsets = Vec::with_capacity(node.content.len());
        let mut off = 0u64;
        for e in &node.content {
            offsets.push(off);
            off += e.byte_len();
        }
        node.content
            .par_iter()
            .zip(offsets.par_iter())
            .try_for_each(|(e, &at)| -> Result<()> {
                if let Extent::Data { id, len } = e {
                    let data = self.read_data(id)?;
                    if data.len() != *len as usize {
                        return Err(anyhow!(
                            "blob {id} holds {} bytes, the tree says {len}",
                            data.len()
                        ));
                    }
                    f.write_all_at(&data, at)?;
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            })?;
        // Trailing holes, and any size the extents do not reach.
        f.set_len(node.size.max(off))
            .context("setting the file's length")?;
        self.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_data(&self, id: &Id) -> Result<Vec<u8>> {
        self.reader.read_blob(id, true)
    }

    /// Owner, xattrs, mode, times: in that order, since chown clears
    /// setuid/setgid and ACLs touch the group bits.
    fn set_metadata(&self, path: &Path, node: &Node) -> Result<()> {
        if self.as_root {
            meta::lchown(path, node.uid, node.gid).context("setting the owner")?;
        }
        for (name, value) in &node.xattrs {
            if let Err(e) = meta::set_xattr(path, name, value) {
                let n = String::from_utf8_lossy(name);
                let denied = matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EACCES)
                );
                if denied && !self.as_root {
                    crate::warn(&format!(
                        "{}: extended attribute {n} not restored: {e}",
                        path.display()
                    ));
                } else {
                    return Err(anyhow!(e).context(format!("setting extended attribute {n}")));
                }
            }
        }
        if node.kind != NodeKind::Symlink {
            meta::chmod(path, node.mode).context("setting the mode")?;
        }
        meta::set_times(path, node.atime, node.mtime).context("setting the times")?;
        Ok(())
    }
}
