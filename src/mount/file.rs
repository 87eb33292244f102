//! Regular files: opened read-only, read a blob at a time through the
//! in-memory cache of decrypted blobs (sequential readers have the
//! following blobs loaded ahead); holes and the tail past the stored
//! content read as zeros, and are what `SEEK_HOLE` finds. A blob that
//! cannot be read is EIO for that read only, logged with the file's path
//! and the reason (naming the pack).

use std::ops::Range;
use std::sync::Arc;

use fuser::{Errno, OpenAccMode, OpenFlags};

use super::prefetch::{self, InodeOrder, Order};
use super::{Entry, MountFs, Place, Stored, inode};
use crate::format::tree::{Extent, Node, NodeKind};

/// What a read gives: most reads lie inside one blob and are answered
/// from the cached blob without a copy; others are put together.
pub enum ReadData {
    Piece(Arc<Vec<u8>>, Range<usize>),
    Bytes(Vec<u8>),
}

impl ReadData {
    pub fn bytes(&self) -> &[u8] {
        match self {
            ReadData::Piece(blob, range) => &blob[range.clone()],
            ReadData::Bytes(b) => b,
        }
    }
}

/// Where each extent of a file starts.
fn extent_starts(node: &Node) -> Vec<u64> {
    let mut at = 0u64;
    node.content
        .iter()
        .map(|x| {
            let start = at;
            at += x.byte_len();
            start
        })
        .collect()
}

/// Where each extent of the file `s` (whose node is `node`) starts: for a
/// file of one extent, at once; else computed once and kept.
fn starts_of<'a>(s: &'a Stored, node: &Node) -> &'a [u64] {
    if node.content.len() <= 1 {
        return &[0];
    }
    s.state().starts.get_or_init(|| extent_starts(node))
}

/// `SEEK_DATA`: the first offset at or after `offset` inside a data
/// extent. `SEEK_HOLE`: the first at or after `offset` inside a hole, the
/// end of the stored content counting as one (what follows it, up to the
/// size, reads as zeros), so the size when all that remains is data. ENXIO
/// from the size on, or when only holes remain, as Linux filesystems
/// answer.
fn seek(node: &Node, starts: &[u64], offset: i64, whence: i32) -> Result<i64, Errno> {
    let want_data = match whence {
        libc::SEEK_DATA => true,
        libc::SEEK_HOLE => false,
        _ => return Err(Errno::EINVAL),
    };
    let size = node.size;
    let Ok(offset) = u64::try_from(offset) else {
        return Err(Errno::ENXIO);
    };
    if offset >= size {
        return Err(Errno::ENXIO);
    }
    let content = &node.content;
    let first = starts.partition_point(|&st| st <= offset).saturating_sub(1);
    let mut end_of_content = 0;
    for (i, extent) in content.iter().enumerate().skip(first) {
        let start = starts[i];
        let end = start + extent.byte_len();
        end_of_content = end;
        if end <= offset {
            continue;
        }
        if matches!(extent, Extent::Data { .. }) == want_data {
            return Ok(start.max(offset) as i64);
        }
    }
    if want_data {
        Err(Errno::ENXIO)
    } else {
        Ok(end_of_content.clamp(offset, size) as i64)
    }
}

impl MountFs {
    /// A file's first read: the other files of its directory are likely
    /// read next, so their blobs are loaded ahead. A directory of up to
    /// [`prefetch::FILES`] entries is loaded whole, once; of a larger one,
    /// the files that follow this one in name order (`rsync`, `tar`) and
    /// in inode order (`cp -a` sorts a directory by inode number), half a
    /// window at a time ([`prefetch::Sequence::files_ahead`]).
    fn files_after(&self, s: &Stored) {
        let Place::In { dir, index } = &s.place else {
            return;
        };
        let Some(parent) = self.table.get(dir.ino) else {
            return;
        };
        let Entry::Stored(p) = &*parent else { return };
        let Ok(tree) = self.tree_of(dir.ino, p) else {
            return;
        };
        let n = tree.nodes.len();
        let reads = &p.state().reads;
        if n <= prefetch::FILES {
            if reads.first_time() {
                self.prefetch.load_files(&tree, 0..n);
            }
            return;
        }
        let at = *index as usize;
        let by_inode = p.state().by_inode.get_or_init(|| {
            let mut order: Vec<(u64, u32)> = tree
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| (inode::first_number(&self.identity_of(dir.ino, p, node)), i as u32))
                .collect();
            order.sort_unstable();
            InodeOrder::new(order.into_iter().map(|(_, i)| i).collect())
        });
        let by_name = reads.files_ahead(Order::Name, at, n);
        let by_ino = match by_inode.rank.get(at) {
            Some(&here) => reads.files_ahead(Order::Inode, here as usize, n),
            None => 0..0,
        };
        let by_ino = by_inode.order[by_ino].iter().map(|&i| i as usize);
        self.prefetch.load_files(&tree, by_name.chain(by_ino));
    }

    /// Checks an open of `ino`: for writing it is EROFS (the read-only
    /// mount refuses that before asking); for reading, ENOSYS, which tells
    /// the kernel that opens need no request at all (it then keeps the
    /// page cache of every file, as FOPEN_KEEP_CACHE would, and sends no
    /// release): two requests fewer per file copied.
    pub fn open(&self, ino: u64, flags: OpenFlags) -> Errno {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Errno::EROFS;
        }
        match self.table.get(ino).as_deref() {
            None => Errno::ENOENT,
            Some(Entry::Stored(s)) => match self.node_of(s) {
                Ok(n) if n.kind == NodeKind::Dir => Errno::EISDIR,
                Ok(_) => Errno::ENOSYS,
                Err(e) => e,
            },
            Some(Entry::Dir(_)) => Errno::EISDIR,
            Some(_) => Errno::ENOSYS,
        }
    }

    /// Where `SEEK_DATA` or `SEEK_HOLE` (`whence`) from `offset` lands in
    /// the file `ino`; any other `whence` is EINVAL (the kernel answers
    /// SEEK_SET, SEEK_CUR and SEEK_END itself).
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Result<i64, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        match &*e {
            Entry::Stored(s) => {
                let node = self.node_of(s)?;
                match node.kind {
                    NodeKind::File => seek(&node, starts_of(s, &node), offset, whence),
                    NodeKind::Dir => Err(Errno::EISDIR),
                    _ => Err(Errno::EINVAL),
                }
            }
            Entry::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `size` bytes from `offset` of the file `ino`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<ReadData, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        let Entry::Stored(s) = &*e else {
            return Err(Errno::EISDIR);
        };
        let node = self.node_of(s)?;
        if node.kind != NodeKind::File {
            return Err(Errno::EINVAL);
        }
        let file_size = node.size;
        if offset >= file_size {
            return Ok(ReadData::Bytes(Vec::new()));
        }
        let end = file_size.min(offset.saturating_add(size as u64));
        let starts = starts_of(s, &node);
        // Allocated only when the read is not one piece of one blob.
        let mut out = Vec::new();
        let len = (end - offset) as usize;
        let mut i = starts.partition_point(|&st| st <= offset).saturating_sub(1);
        if node.content.len() > 1 {
            self.prefetch.after_read(&s.state().reads, &node, i, offset, end);
        }
        if offset == 0 {
            self.files_after(s);
        }
        let mut pos = offset;
        while pos < end && i < node.content.len() {
            let extent = &node.content[i];
            let start = starts[i];
            let ext_end = start + extent.byte_len();
            if ext_end <= pos {
                i += 1;
                continue;
            }
            let from = (pos - start) as usize;
            let to = (end.min(ext_end) - start) as usize;
            match extent {
                Extent::Hole { .. } => {
                    out.reserve_exact(len - out.len());
                    out.resize(out.len() + (to - from), 0)
                }
                Extent::Data { id, .. } => {
                    let blob = self
                        .blobs
                        .get_or_load(id, Vec::len, || self.reader.read_blob(id, true))
                        .map_err(|err| {
                            crate::warn(&format!(
                                "reading {} of the mount failed: {err:#}",
                                self.path_of(ino)
                            ));
                            Errno::EIO
                        })?;
                    let Some(bytes) = blob.get(from..to) else {
                        crate::warn(&format!(
                            "reading {} of the mount failed: blob {id} is shorter than its extent",
                            self.path_of(ino)
                        ));
                        return Err(Errno::EIO);
                    };
                    if pos == offset && start + to as u64 == end {
                        return Ok(ReadData::Piece(blob, from..to));
                    }
                    out.reserve_exact(len - out.len());
                    out.extend_from_slice(bytes);
                }
            }
            pos = start + to as u64;
            i += 1;
        }
        // Past the stored content, up to the size: a trailing hole.
        out.resize(len, 0);
        Ok(ReadData::Bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Id;
    use crate::format::tree::Node;

    struct F(Node);

    impl F {
        fn seek(&self, offset: i64, whence: i32) -> Result<i64, Errno> {
            seek(&self.0, &extent_starts(&self.0), offset, whence)
        }
    }

    fn file(size: u64, content: &[Extent]) -> F {
        let mut node = Node::new(b"f", NodeKind::File, libc::S_IFREG | 0o644);
        node.size = size;
        node.content = content.to_vec();
        F(node)
    }

    const DATA: Extent = Extent::Data {
        id: Id([7; 32]),
        len: 10,
    };
    const HOLE: Extent = Extent::Hole { len: 10 };
    const D: i32 = libc::SEEK_DATA;
    const H: i32 = libc::SEEK_HOLE;

    #[test]
    fn seek_finds_data_and_holes_across_neighbouring_extents_of_one_kind() {
        // 0..10 hole, 10..20 hole, 20..30 data, 30..40 data, 40..50 hole.
        let f = file(50, &[HOLE, HOLE, DATA, DATA, HOLE]);
        assert_eq!(f.seek(0, D), Ok(20));
        assert_eq!(f.seek(15, D), Ok(20));
        assert_eq!(f.seek(25, D), Ok(25));
        assert_eq!(f.seek(39, D), Ok(39));
        assert_eq!(f.seek(40, D), Err(Errno::ENXIO));
        assert_eq!(f.seek(0, H), Ok(0));
        assert_eq!(f.seek(20, H), Ok(40));
        assert_eq!(f.seek(35, H), Ok(40));
        assert_eq!(f.seek(49, H), Ok(49));
        assert_eq!(f.seek(50, H), Err(Errno::ENXIO));
        assert_eq!(f.seek(-1, D), Err(Errno::ENXIO));
        assert_eq!(f.seek(0, libc::SEEK_END), Err(Errno::EINVAL));
    }

    #[test]
    fn seek_treats_the_size_past_the_stored_content_as_a_hole() {
        let f = file(30, &[DATA]);
        assert_eq!(f.seek(0, H), Ok(10));
        assert_eq!(f.seek(12, H), Ok(12));
        assert_eq!(f.seek(12, D), Err(Errno::ENXIO));
        let all_data = file(20, &[DATA, DATA]);
        assert_eq!(all_data.seek(3, H), Ok(20));
        let empty = file(5, &[]);
        assert_eq!(empty.seek(0, D), Err(Errno::ENXIO));
        assert_eq!(empty.seek(0, H), Ok(0));
        assert_eq!(file(0, &[]).seek(0, H), Err(Errno::ENXIO));
    }
}
