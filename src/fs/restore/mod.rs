//! Writing a snapshot's tree back to the filesystem, exactly: content with
//! its holes, owners, modes (setuid/setgid/sticky included), xattrs and
//! ACLs, nanosecond times, hard links, devices and fifos.
//!
//! Every entry is made relative to a directory descriptor below the target
//! (see [`super::beneath`]): no symlink is ever followed, whether a snapshot
//! restored it or it was already in the target, so no tree can make restore
//! write outside its target.
//!
//! Passes: walk the trees a level at a time, making directories and
//! deciding which entry of each hard-link group is written; write files
//! and special entries in parallel, a directory at a time; link the rest
//! of each group; set directory metadata deepest first. A damaged blob or
//! tree fails only the entries that use it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::format::tree::{Extent, Node, NodeKind};
use crate::repository::index::Location;
use crate::repository::reader::{Reader, span_ranges};

use super::beneath::{self, DirFacts, Entry, Replaced};
use plan::{Dir, Plan};

mod plan;

/// Neighbouring one-blob files are read together when the bytes between
/// them are at most this many, and the read at most [`SPAN_BYTES`] (held
/// while its files are written).
const SPAN_GAP: u64 = 16 << 10;
const SPAN_BYTES: u64 = 2 << 20;

pub struct Restorer<'a> {
    reader: &'a Reader<'a>,
    /// The directory everything is restored below, and how it is shown.
    base: BorrowedFd<'a>,
    shown: PathBuf,
    as_root: bool,
    /// Who new files belong to, and the mask their mode is created under.
    euid: u32,
    egid: u32,
    umask: u32,
    errors: Mutex<Vec<String>>,
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

/// A file whose content is one blob: where the blob is, and the file's
/// directory in the plan and place in it.
type OneBlob = (Location, (u32, u32));

impl<'a> Restorer<'a> {
    pub fn new(reader: &'a Reader<'a>, base: BorrowedFd<'a>, shown: &Path) -> Self {
        let euid = rustix::process::geteuid().as_raw();
        let egid = rustix::process::getegid().as_raw();
        let umask = current_umask();
        Restorer {
            reader,
            base,
            shown: shown.to_path_buf(),
            as_root: euid == 0,
            euid,
            egid,
            umask,
            errors: Mutex::new(Vec::new()),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn show(&self, rel: &Path) -> PathBuf {
        self.shown.join(rel)
    }

    fn error(&self, rel: &Path, err: &anyhow::Error) {
        let msg = format!("restoring {}: {err:#}", self.show(rel).display());
        eprintln!("error: {}", crate::escape::text(&msg));
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    }

    fn replaced(&self, rel: &Path, r: Replaced) {
        self.replaced_at(|| rel.to_path_buf(), r)
    }

    /// [`Restorer::replaced`], the entry's path made only if it is shown.
    fn replaced_at(&self, rel: impl FnOnce() -> PathBuf, r: Replaced) {
        match r {
            Replaced::Nothing => {}
            Replaced::Symlink(target) => crate::warn(&format!(
                "{}: replaced the symlink that was there (to {}) instead of following it",
                self.show(&rel()).display(),
                String::from_utf8_lossy(&target)
            )),
            Replaced::Other => {}
        }
    }

    /// Restores the entries of directory `node` into the base directory
    /// itself (the snapshot root, or `SNAPSHOT:DIR` onto a target that is
    /// that directory's place), leaving the base's own metadata alone.
    pub fn restore_into_base(&self, node: &Node) -> Result<()> {
        let mut plan = Plan::default();
        plan.dirs.push(Dir {
            rel: PathBuf::new(),
            node: None,
            entries: Vec::new(),
            made: false,
        });
        self.plan_from((0, node.subtree), &mut plan);
        self.run(plan)
    }

    /// Restores `node` as entry `rel` below the base, making the
    /// directories that lead to it (without metadata) as needed.
    pub fn restore_at(&self, node: &Node, rel: &Path) -> Result<()> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().context("the restore path has no name")?;
        let mut fd = beneath::open_dir(self.base, Path::new(""))?;
        let mut walked = PathBuf::new();
        for c in parent.iter() {
            walked.push(c);
            let (r, _) = beneath::make_dir(fd.as_fd(), c)
                .with_context(|| format!("making {}", self.show(&walked).display()))?;
            self.replaced(&walked, r);
            fd = beneath::open_dir(self.base, &walked)
                .with_context(|| format!("opening {}", self.show(&walked).display()))?;
        }
        let mut plan = Plan::default();
        plan.dirs.push(Dir {
            rel: parent.to_path_buf(),
            node: None,
            entries: Vec::new(),
            made: false,
        });
        let mut renamed = node.clone();
        renamed.name = name.as_bytes().to_vec();
        if let Some(sub) = self.add(renamed, 0, &mut plan, &mut HashMap::new(), fd.as_fd()) {
            self.plan_from(sub, &mut plan);
        }
        self.run(plan)
    }

    fn run(&self, plan: Plan) -> Result<()> {
        let failed: Mutex<HashSet<(usize, Vec<u8>)>> = Mutex::new(HashSet::new());
        let dirs = OpenDirs::new(self, &plan);
        let unwritten = |i: usize, node: &Node| {
            failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((i, node.name.clone()));
        };
        let entry = |i: usize, dir: &OpenDir, node: &Node, pre: Option<(&Location, &[u8])>| {
            let (fd, facts) = dir;
            let at = &plan.dirs[i].rel;
            if let Err(e) = self.write_entry(fd.as_fd(), *facts, at, node, pre) {
                self.error(&at.join(OsStr::from_bytes(&node.name)), &e);
                unwritten(i, node);
            }
        };
        // Files of one blob first, in the order of their packs, whichever
        // directory they are in: neighbours in a pack are read together.
        let (mut one_blob, rest) = self.one_blob(&plan);
        let spans = span_ranges(&mut one_blob, SPAN_GAP, SPAN_BYTES);
        spans.into_par_iter().for_each(|r| {
            let group = &one_blob[r];
            let locs: Vec<Location> = group.iter().map(|(l, _)| *l).collect();
            // If the span cannot be read, each file reads its own blob and
            // reports what went wrong with it.
            let span = self.reader.read_span(&locs).ok();
            drop(locs);
            group.par_iter().for_each(|(loc, (i, e))| {
                let node = &plan.dirs[*i as usize].entries[*e as usize];
                let Some(dir) = dirs.get(*i as usize) else {
                    return unwritten(*i as usize, node);
                };
                let sealed = span.as_ref().and_then(|s| s.sealed(loc));
                entry(*i as usize, &dir, node, sealed.map(|s| (loc, s)));
            });
        });
        drop(one_blob);
        rest.par_iter().for_each(|(i, node)| match dirs.get(*i) {
            Some(dir) => entry(*i, &dir, node, None),
            None => unwritten(*i, node),
        });
        drop(dirs);
        let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
        for l in &plan.links {
            let rel = plan.dirs[l.dir].rel.join(OsStr::from_bytes(&l.name));
            let to = plan.dirs[l.to_dir].rel.join(OsStr::from_bytes(&l.to_name));
            if failed.contains(&(l.to_dir, l.to_name.clone())) {
                // A link to a damaged file would be damaged too: say so.
                let e = anyhow!("its hard link {} could not be restored", self.show(&to).display());
                self.error(&rel, &e);
                continue;
            }
            let linked = beneath::open_dir(self.base, &plan.dirs[l.to_dir].rel).and_then(|from| {
                let dir = beneath::open_dir(self.base, &plan.dirs[l.dir].rel)?;
                beneath::link(
                    from.as_fd(),
                    OsStr::from_bytes(&l.to_name),
                    dir.as_fd(),
                    OsStr::from_bytes(&l.name),
                )
            });
            match linked {
                Ok(r) => self.replaced(&rel, r),
                Err(e) => self.error(
                    &rel,
                    &anyhow!(e).context(format!("linking to {}", self.show(&to).display())),
                ),
            }
        }
        // Directory metadata last, deepest first, so that nothing done in
        // a directory after its times are set changes them: a depth at a
        // time, each in parallel.
        let depth: Vec<usize> = plan.dirs.iter().map(|d| d.rel.components().count()).collect();
        let mut order: Vec<usize> = (0..plan.dirs.len())
            .filter(|&i| plan.dirs[i].node.is_some())
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(depth[i]));
        for level in order.chunk_by(|&a, &b| depth[a] == depth[b]) {
            level.par_iter().for_each(|&i| {
                let dir = &plan.dirs[i];
                if let Some(node) = &dir.node
                    && let Err(e) = beneath::open_dir(self.base, &dir.rel)
                        .map_err(|e| anyhow!(e).context("opening the directory"))
                        .and_then(|fd| self.set_metadata(&Entry::Open(fd.as_fd()), node))
                {
                    self.error(&dir.rel, &e);
                }
            });
        }
        Ok(())
    }

    /// The plan's files whose content is one blob, and the other entries,
    /// with their directories. Sorted by pack and offset, the first are
    /// grouped so that each group is one ranged read of its pack: small
    /// files lie side by side in a pack, in the order they were backed up
    /// whatever their directories, and reading them together saves a read
    /// per file (a request per file, from a remote store).
    fn one_blob<'n>(&self, plan: &'n Plan) -> (Vec<OneBlob>, Vec<(usize, &'n Node)>) {
        let mut one_blob = Vec::new();
        let mut rest = Vec::new();
        for (i, dir) in plan.dirs.iter().enumerate() {
            for (e, node) in dir.entries.iter().enumerate() {
                let loc = match (node.kind, node.content.as_slice()) {
                    (NodeKind::File, [Extent::Data { id, .. }]) => self.reader.data_location(id),
                    _ => None,
                };
                match (loc, u32::try_from(i), u32::try_from(e)) {
                    (Some(loc), Ok(i), Ok(e)) => one_blob.push((loc, (i, e))),
                    _ => rest.push((i, node)),
                }
            }
        }
        (one_blob, rest)
    }

    /// What of a file's metadata it is created with: whether it already
    /// has its owner, and whether it can be made with its final permission
    /// bits (the mode to create it with).
    ///
    /// Only in a directory this restore made: it stays 0700 until its own
    /// metadata is set, last, so no other user reaches the file before it
    /// is whole. Final bits from the start only for a file that has its
    /// owner from the start, no setuid, setgid or sticky bit, no xattrs
    /// (an ACL would set bits of its own), no default ACL in the directory,
    /// and bits the umask leaves alone. What the file got is checked
    /// (`fstat`) before `fchown` and `fchmod` are skipped. Everything else
    /// is created 0600 and set afterwards.
    fn created(&self, facts: DirFacts, node: &Node) -> (bool, Option<u32>) {
        let owned = !self.as_root || (node.uid == self.euid && node.gid == self.egid && facts.creators_group);
        let bits = node.mode & 0o7777;
        let plain = owned
            && bits & 0o7000 == 0
            && node.xattrs.is_empty()
            && facts.no_default_acl
            && bits & self.umask == 0;
        (owned, plain.then_some(bits))
    }

    /// Writes one entry into `dir`, which is at `at`; `pre` is its
    /// content's blob, sealed, if it was read with its neighbours.
    fn write_entry(
        &self,
        dir: BorrowedFd,
        facts: DirFacts,
        at: &Path,
        node: &Node,
        pre: Option<(&Location, &[u8])>,
    ) -> Result<()> {
        let name = OsStr::from_bytes(&node.name);
        let rel = || at.join(name);
        match node.kind {
            NodeKind::File => {
                let (owned, mode) = self.created(facts, node);
                let (fd, r) =
                    beneath::create_file(dir, name, mode.unwrap_or(0o600)).context("creating the file")?;
                self.replaced_at(rel, r);
                // O_EXCL: the file is the one just made. Whatever the
                // filesystem gave it other than what was expected (a
                // squashed owner, inherited permissions) is set as before.
                let (owned, moded) = match (owned && self.as_root) || mode.is_some() {
                    true => {
                        let st = rustix::fs::fstat(&fd).context("reading the new file's owner and mode")?;
                        let owner = owned && st.st_uid == node.uid && st.st_gid == node.gid;
                        let bits = mode.is_some_and(|m| st.st_mode & 0o7777 == m);
                        (owner || !self.as_root, bits && (owner || !self.as_root))
                    }
                    false => (owned, false),
                };
                if let Err(e) = self.write_file(&fd, node, pre) {
                    // What was written is not the file: it stays its
                    // creator's alone, as any file that fails does.
                    if moded {
                        let _ = beneath::set_mode(&Entry::Open(fd.as_fd()), 0o600);
                    }
                    return Err(e);
                }
                self.set_metadata_skipping(&Entry::Open(fd.as_fd()), node, owned, moded)
            }
            NodeKind::Symlink => {
                let r = beneath::create_symlink(dir, name, &node.target).context("creating the symlink")?;
                self.replaced_at(rel, r);
                self.set_metadata(&Entry::Link(dir, name), node)
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                let r = beneath::create_special(dir, name, node).context("creating the special file")?;
                self.replaced_at(rel, r);
                let fd = beneath::open_special(dir, name, node).context("opening the special file")?;
                self.set_metadata(&Entry::Special(fd.as_fd()), node)
            }
            NodeKind::Dir => unreachable!("directories are planned separately"),
        }
    }

    fn write_file(&self, fd: &OwnedFd, node: &Node, pre: Option<(&Location, &[u8])>) -> Result<()> {
        let mut offsets = Vec::with_capacity(node.content.len());
        let mut off = 0u64;
        for e in &node.content {
            offsets.push(off);
            off += e.byte_len();
        }
        // Blobs are opened in parallel but written one at a time: the
        // kernel serialises writes to one file anyway, and its writers
        // spin while they wait, where these sleep.
        let writing = Mutex::new(());
        node.content
            .par_iter()
            .zip(offsets.par_iter())
            .try_for_each(|(e, &at)| -> Result<()> {
                if let Extent::Data { id, len } = e {
                    // A blob read with its neighbours that does not open is
                    // read again, from each of its packs, to say why.
                    let data = match pre.filter(|(l, _)| l.entry.id == *id) {
                        Some((loc, sealed)) => self
                            .reader
                            .open_plain(loc, sealed, true)
                            .or_else(|_| self.reader.read_blob_plain(id, true))?,
                        None => self.reader.read_blob_plain(id, true)?,
                    };
                    if data.len() != *len as usize {
                        return Err(anyhow!(
                            "blob {id} holds {} bytes, the tree says {len}",
                            data.len()
                        ));
                    }
                    {
                        let _turn = writing.lock().unwrap_or_else(|e| e.into_inner());
                        write_all_at(fd.as_fd(), &data, at)?;
                    }
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            })?;
        // Trailing holes, and any size the extents do not reach. A new file
        // whose last extent is data is already as long as it should be.
        let written = node.size <= off && matches!(node.content.last(), None | Some(Extent::Data { .. }));
        if !written {
            rustix::fs::ftruncate(fd, node.size.max(off)).context("setting the file's length")?;
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Owner, xattrs, mode, times: in that order, since chown clears
    /// setuid/setgid and ACLs touch the group bits.
    fn set_metadata(&self, entry: &Entry, node: &Node) -> Result<()> {
        self.set_metadata_skipping(entry, node, false, false)
    }

    /// [`Restorer::set_metadata`], less the owner or the mode where the
    /// entry was created with them.
    fn set_metadata_skipping(&self, entry: &Entry, node: &Node, owned: bool, moded: bool) -> Result<()> {
        if self.as_root && !owned {
            beneath::set_owner(entry, node.uid, node.gid).context("setting the owner")?;
        }
        for (name, value) in &node.xattrs {
            if let Err(e) = beneath::set_xattr(entry, name, value) {
                let n = String::from_utf8_lossy(name).into_owned();
                let denied = matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EACCES)
                );
                if denied && !self.as_root {
                    crate::warn(&format!("extended attribute {n} not restored: {e}"));
                } else {
                    return Err(anyhow!(e).context(format!("setting extended attribute {n}")));
                }
            }
        }
        if node.kind != NodeKind::Symlink && !moded {
            beneath::set_mode(entry, node.mode).context("setting the mode")?;
        }
        beneath::set_times(entry, node).context("setting the times")?;
        Ok(())
    }
}

/// The plan's directories as entries are written into them: each opened
/// when first needed (below the base, no symlink followed) and kept open,
/// at most [`OpenDirs::cap`] of them, the least recently used closed
/// first. Entries are written in the order of their packs, which is the
/// order they were backed up in, so the directories in use at once are
/// few. A directory opened again must be the one first opened (device and
/// inode): one renamed or swapped meanwhile is not written into.
struct OpenDirs<'r, 'p> {
    restorer: &'r Restorer<'r>,
    plan: &'p Plan,
    open: Mutex<lru::LruCache<usize, OpenDir>>,
    /// Each directory's device and inode when first opened, and what files
    /// created in it start with.
    first: Vec<OnceLock<((u64, u64), DirFacts)>>,
    /// Could not be opened, or was not the same directory: reported once.
    broken: Vec<AtomicBool>,
}

/// A directory kept open, and what files created in it start with.
type OpenDir = (Arc<OwnedFd>, DirFacts);

impl<'r, 'p> OpenDirs<'r, 'p> {
    fn new(restorer: &'r Restorer<'r>, plan: &'p Plan) -> Self {
        let n = plan.dirs.len();
        let cap = std::num::NonZeroUsize::new(Self::cap()).expect("at least 16");
        OpenDirs {
            restorer,
            plan,
            open: Mutex::new(lru::LruCache::new(cap)),
            first: (0..n).map(|_| OnceLock::new()).collect(),
            broken: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// A quarter of the descriptors the process may open beyond 128 (the
    /// packs the local backend keeps open, the files being written),
    /// between 16 and 1,024.
    fn cap() -> usize {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        (soft.saturating_sub(128) / 4).clamp(16, 1024) as usize
    }

    /// Directory `i`, open, and what files created in it start with; `None`
    /// if it cannot be opened or is not the directory first opened there
    /// (reported once; each entry that needed it then fails).
    fn get(&self, i: usize) -> Option<OpenDir> {
        if self.broken[i].load(Ordering::Relaxed) {
            return None;
        }
        let cached = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i)
            .cloned();
        match cached {
            Some(dir) => Some(dir),
            None => match self.reopen(i) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    if !self.broken[i].swap(true, Ordering::Relaxed) {
                        self.restorer.error(&self.plan.dirs[i].rel, &e);
                    }
                    None
                }
            },
        }
    }

    /// Opens directory `i` (again) and keeps it open. Out of descriptors,
    /// it closes the directories kept open and tries once more.
    fn reopen(&self, i: usize) -> Result<OpenDir> {
        let rel = &self.plan.dirs[i].rel;
        let fd = match beneath::open_dir(self.restorer.base, rel) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                self.open.lock().unwrap_or_else(|e| e.into_inner()).clear();
                beneath::open_dir(self.restorer.base, rel)
            }
            r => r,
        }
        .map_err(|e| anyhow!(e).context("opening the directory"))?;
        let st =
            rustix::fs::fstat(&fd).map_err(|e| anyhow!(e).context("reading the directory's identity"))?;
        let this = (st.st_dev, st.st_ino);
        // Files start with their final owner and bits only in directories
        // this restore made.
        let (first, facts) = *self.first[i].get_or_init(|| {
            let facts = match self.plan.dirs[i].made {
                true => DirFacts::of(fd.as_fd(), self.restorer.egid),
                false => DirFacts::default(),
            };
            (this, facts)
        });
        if first != this {
            bail!("the directory was replaced while the restore wrote into it");
        }
        let dir = (Arc::new(fd), facts);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(i, dir.clone());
        Ok(dir)
    }
}

/// Writes all of `data` at `at`.
fn write_all_at(fd: BorrowedFd, mut data: &[u8], mut at: u64) -> std::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, at) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                at += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The process's umask, read from `/proc/self/status` (setting it to read
/// it would change it for every thread meanwhile); if it cannot be read,
/// one that keeps every file on the path that sets its mode afterwards.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}
