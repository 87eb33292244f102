//! Reading a file's data for the archiver: its data regions (holes stay
//! holes), a large region a batch at a time around the page cache, each
//! batch chunked and its chunks stored in parallel; and standard input.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::aligned::{self, ALIGN, AlignedBuf};
use crate::format::tree::{Extent, Node, NodeKind};
use crate::format::{BlobKind, Id, Timestamp};

use super::Archiver;
use crate::fs::place::Stat;
use crate::fs::source::{SourceError, advise_sequential, data_regions, read_full_at};

/// How much of a large file is read before its chunks are processed; a
/// file's reader runs one batch ahead of its chunks' processing. Smaller
/// batches leave the two cores idle at the end of each (a 1 GiB backup
/// took 2.8 s with 4 MiB batches, 2.4 s with 8 MiB).
const BATCH: usize = 8 * 1024 * 1024;
/// The batch of a large file read while another is: its chunks are
/// processed beside the first file's, so smaller batches keep the cores
/// as busy, and three such files at once no longer hold 50 MB. Regions
/// up to this size are read whole.
const SIDE_BATCH: usize = 2 * 1024 * 1024;
/// Regions read whole from this size are read into a mapping of their
/// own, returned to the system when done rather than kept in an arena.
const MAPPED: usize = 1024 * 1024;

/// Large regions being read in batches, by all file threads.
static BATCHED: AtomicUsize = AtomicUsize::new(0);

/// Counts one region in [`BATCHED`] while it lives.
struct Batched;

impl Batched {
    /// Counts a region in; says whether it is the only one.
    fn enter() -> (Batched, bool) {
        (Batched, BATCHED.fetch_add(1, Ordering::Relaxed) == 0)
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        BATCHED.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Archiver<'_> {
    /// Reads a file's data regions (holes stay holes), chunking each.
    pub(super) fn read_file(&self, path: &Path, file: &File, meta: &Stat) -> Result<Vec<Extent>> {
        let size = meta.size;
        let mut extents = Vec::new();
        let mut pos = 0u64;
        for (start, end) in data_regions(file, size) {
            if start > pos {
                extents.push(Extent::Hole { len: start - pos });
            }
            self.read_region(file, start, end, &mut extents)
                .with_context(|| format!("reading {}", path.display()))?;
            pos = end;
        }
        if pos < size {
            extents.push(Extent::Hole { len: size - pos });
        }
        let after = Stat::of_fd(file).map_err(SourceError)?;
        if after.size != size || after.mtime != meta.mtime {
            crate::warn(&format!(
                "{} changed while it was read; the snapshot holds what was read",
                path.display()
            ));
        }
        Ok(extents)
    }

    /// Reads, chunks and stores one data region. A region longer than one
    /// batch is read and chunked on a thread of its own, a batch ahead of
    /// the threads that hash, compress and seal its chunks.
    fn read_region(&self, file: &File, start: u64, end: u64, out: &mut Vec<Extent>) -> Result<()> {
        if end - start <= SIDE_BATCH as u64 {
            let n = (end - start) as usize;
            let (mut mapped, mut small);
            let buf: &mut [u8] = if n >= MAPPED {
                mapped = AlignedBuf::zeroed(n);
                &mut mapped[..n]
            } else {
                small = vec![0; n];
                &mut small
            };
            let got = read_full_at(file, buf, start).map_err(SourceError)?;
            let buf = &buf[..got];
            self.bytes_read.fetch_add(got as u64, Ordering::Relaxed);
            let (lens, _) = self.chunker.split(buf, true);
            return self.store_chunks(buf, &lens, out);
        }
        advise_sequential(file, start, end);
        // Read around the page cache where the file allows: each batch goes
        // from the disk into an aligned buffer, behind room for the bytes
        // the last batch left unchunked.
        let direct = start.is_multiple_of(ALIGN as u64) && aligned::set_direct(file, true);
        let room = self.chunker.max_size().next_multiple_of(ALIGN);
        let (_batched, alone) = Batched::enter();
        let batch = if alone { BATCH } else { SIDE_BATCH };
        type Batch = (AlignedBuf, Range<usize>, Vec<usize>);
        let stored = std::thread::scope(|s| {
            // Handed over, not queued: one batch read while the last is
            // processed, two buffers a file.
            let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Batch>>(0);
            // Batches processed come back to be filled again.
            let (back, spare) = std::sync::mpsc::channel::<AlignedBuf>();
            s.spawn(move || {
                let mut carry: Vec<u8> = Vec::new();
                let mut off = start;
                let mut direct = direct;
                loop {
                    let n = (batch as u64).min(end - off) as usize;
                    let mut slab = spare
                        .try_recv()
                        .unwrap_or_else(|_| AlignedBuf::zeroed(room + batch));
                    let from = room - carry.len();
                    slab[from..room].copy_from_slice(&carry);
                    let got = match read_batch(file, &mut slab[room..], off, n, &mut direct) {
                        Ok(g) => g,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    off += got as u64;
                    self.bytes_read.fetch_add(got as u64, Ordering::Relaxed);
                    let eof = got < n || off >= end;
                    let data = &slab[from..room + got];
                    let (lens, used) = self.chunker.split(data, eof);
                    carry.clear();
                    carry.extend_from_slice(&data[used..]);
                    let range = from..from + used;
                    if tx.send(Ok((slab, range, lens))).is_err() || eof {
                        return;
                    }
                }
            });
            for batch in rx {
                let (slab, range, lens) = batch.map_err(SourceError)?;
                self.store_chunks(&slab[range], &lens, out)?;
                let _ = back.send(slab);
            }
            Ok(())
        });
        // The file's other regions are read through the page cache.
        if direct {
            aligned::set_direct(file, false);
        }
        stored
    }

    /// Stores consecutive chunks of `buf`, of lengths `lens`, in parallel;
    /// appends their extents in order.
    fn store_chunks(&self, buf: &[u8], lens: &[usize], out: &mut Vec<Extent>) -> Result<()> {
        let mut chunks = Vec::with_capacity(lens.len());
        let mut p = 0;
        for &l in lens {
            chunks.push(&buf[p..p + l]);
            p += l;
        }
        let ids: Vec<Id> = chunks
            .par_iter()
            .map(|c| self.writer.add_blob(BlobKind::Data, c))
            .collect::<Result<_>>()?;
        for (id, c) in ids.into_iter().zip(&chunks) {
            out.push(Extent::Data {
                id,
                len: c.len() as u32,
            });
        }
        Ok(())
    }

    /// Archives standard input as one file named `name` at the root.
    pub fn archive_stdin(&self, name: &str) -> Result<Id> {
        let mut extents = Vec::new();
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::new();
        let mut eof = false;
        let mut total = 0u64;
        while !eof || !buf.is_empty() {
            if !eof {
                let want = BATCH + self.chunker.max_size();
                let mut got = 0;
                let old = buf.len();
                buf.resize(want.max(old), 0);
                while old + got < buf.len() {
                    let n = stdin
                        .read(&mut buf[old + got..])
                        .context("reading standard input")?;
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    got += n;
                }
                buf.truncate(old + got);
                total += got as u64;
            }
            let (lens, used) = self.chunker.split(&buf, eof);
            let mut p = 0;
            for l in lens {
                let id = self.writer.add_blob(BlobKind::Data, &buf[p..p + l])?;
                extents.push(Extent::Data { id, len: l as u32 });
                p += l;
            }
            buf.drain(..used);
        }
        self.bytes_read.fetch_add(total, Ordering::Relaxed);
        self.bytes_total.fetch_add(total, Ordering::Relaxed);
        self.files_new.fetch_add(1, Ordering::Relaxed);
        self.listed(1, "new", &Path::new("/").join(name));
        let now = Timestamp::now();
        // SAFETY: getuid/getgid/umask cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut node = Node::new(name.as_bytes(), NodeKind::File, libc::S_IFREG | 0o600);
        node.uid = uid;
        node.gid = gid;
        node.user = self.names.user(uid);
        node.group = self.names.group(gid);
        node.size = total;
        node.blocks = total.div_ceil(512);
        (node.atime, node.mtime, node.ctime) = (now, now, now);
        node.content = extents;
        self.store_tree(vec![node])
    }
}

/// Reads `n` bytes at `off` into `buf` (aligned, at least `n` rounded up
/// to [`ALIGN`] long); fewer only at the end of the file. With `direct`,
/// whole aligned blocks are read around the page cache; a file that
/// refuses that is read through the page cache from then on.
fn read_batch(file: &File, buf: &mut [u8], off: u64, n: usize, direct: &mut bool) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    if *direct {
        let want = n.next_multiple_of(ALIGN);
        let mut got = 0;
        let done = loop {
            if got >= want {
                break Ok(got);
            }
            match file.read_at(&mut buf[got..want], off + got as u64) {
                Ok(0) => break Ok(got),
                // A read that ends inside a block ends at the end of the file.
                Ok(k) if k % ALIGN != 0 => break Ok(got + k),
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match done {
            Ok(got) => return Ok(got.min(n)),
            Err(e) if aligned::refused_direct(&e) => {
                *direct = false;
                aligned::set_direct(file, false);
            }
            Err(e) => return Err(e),
        }
    }
    read_full_at(file, &mut buf[..n], off)
}
