//! Reading a file's data for the archiver: its data regions (holes stay
//! holes), a large region a batch at a time around the page cache, each
//! batch chunked and its chunks stored in parallel; and standard input.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::aligned::{self, ALIGN, AlignedBuf};
use crate::chunker::Chunker;
use crate::format::tree::{Extent, Node, NodeKind};
use crate::format::{BlobKind, Id, Timestamp};

use super::Archiver;
use crate::fs::place::Stat;
use crate::fs::source::{SourceError, advise_sequential, data_regions, read_full_at};

/// How much of a large file is read before its chunks are processed, in
/// the pipeline: its reader runs one batch ahead of its chunks'
/// processing. Smaller batches leave the two cores idle at the end of each
/// (a 1 GiB backup took 2.8 s with 4 MiB batches, 2.4 s with 8 MiB). A
/// region shorter than eight such batches is read in eighths, no smaller
/// than [`SIDE_BATCH`]: the source tree's largest files (4 to 24 MB) held
/// two 8 MB batches where a few would do.
const BATCH: usize = 8 * 1024 * 1024;
/// The batch of a large file read on its own thread while another is in
/// the pipeline; regions up to this size are read whole.
const SIDE_BATCH: usize = 2 * 1024 * 1024;
/// Regions read whole from this size are read into a mapping of their
/// own, returned to the system when done rather than kept in an arena.
const MAPPED: usize = 1024 * 1024;

/// Regions longer than [`SIDE_BATCH`] read at once beside the pipeline.
/// At least one: a file thread waiting for a lane counts on it.
const SIDE_READERS: usize = 2;
const _: () = assert!(SIDE_READERS >= 1);

/// Who reads a large region. One at a time is in the pipeline: read a
/// batch ahead on a thread of its own, its chunks processed in parallel.
/// Up to [`SIDE_READERS`] more are read a batch at a time by their file
/// threads, which process the chunks themselves. A file thread that finds
/// all taken waits: however many large files a directory holds, no more
/// than these are in memory at once (eight at once, one per file thread,
/// made the peak of a source tree's backup swing from 100 to 158 MB).
///
/// Waiting cannot deadlock: a side reader waits on no other thread's
/// work, so its lane comes free; and a file thread never waits for the
/// pipeline alone (the pipeline's thread may be waiting, further down its
/// own stack, for work this thread took), only for any lane.
struct Lanes {
    pipeline: bool,
    side: usize,
}

static LANES: Mutex<Lanes> = Mutex::new(Lanes {
    pipeline: false,
    side: 0,
});
static LANE_FREED: Condvar = Condvar::new();

/// A lane held while a region is read.
enum Lane {
    Pipeline,
    Side,
}

impl Lane {
    /// The pipeline if it is free, else a side lane; waits for either.
    fn take() -> Lane {
        let mut lanes = LANES.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !lanes.pipeline {
                lanes.pipeline = true;
                return Lane::Pipeline;
            }
            if lanes.side < SIDE_READERS {
                lanes.side += 1;
                return Lane::Side;
            }
            lanes = LANE_FREED.wait(lanes).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut lanes = LANES.lock().unwrap_or_else(|e| e.into_inner());
        match self {
            Lane::Pipeline => lanes.pipeline = false,
            Lane::Side => lanes.side -= 1,
        }
        LANE_FREED.notify_one();
    }
}

/// Reads a region a batch at a time into aligned buffers, each batch
/// behind the bytes the last left unchunked, and splits each into chunks.
struct Batches<'f> {
    file: &'f File,
    chunker: &'f Chunker,
    off: u64,
    end: u64,
    batch: usize,
    /// Room kept ahead of each batch for the last batch's unchunked tail.
    room: usize,
    direct: bool,
    carry: Vec<u8>,
}

/// A batch read: its buffer, the range of it that was chunked, and the
/// chunks' lengths.
type Batch = (AlignedBuf, Range<usize>, Vec<usize>);

impl Batches<'_> {
    /// A buffer for one batch.
    fn buffer(&self) -> AlignedBuf {
        AlignedBuf::zeroed(self.room + self.batch)
    }

    /// Reads the next batch into `slab`; `None` once the region is done.
    fn next(&mut self, mut slab: AlignedBuf) -> io::Result<Option<Batch>> {
        if self.off >= self.end && self.carry.is_empty() {
            return Ok(None);
        }
        let n = (self.batch as u64).min(self.end - self.off) as usize;
        let room = self.room;
        let from = room - self.carry.len();
        slab[from..room].copy_from_slice(&self.carry);
        let got = read_batch(self.file, &mut slab[room..], self.off, n, &mut self.direct)?;
        self.off += got as u64;
        let eof = got < n || self.off >= self.end;
        if eof {
            // A file cut short ends its region here.
            self.end = self.off;
        }
        let data = &slab[from..room + got];
        let (lens, used) = self.chunker.split(data, eof);
        self.carry.clear();
        self.carry.extend_from_slice(&data[used..]);
        Ok(Some((slab, from..from + used, lens)))
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
            let before = extents.len();
            self.read_region(file, start, end, &mut extents)
                .with_context(|| format!("reading {}", path.display()))?;
            // A file cut short while it was read: the rest of the region
            // is a hole, so that later regions keep their offsets.
            let got: u64 = extents[before..].iter().map(Extent::byte_len).sum();
            if got < end - start {
                extents.push(Extent::Hole {
                    len: end - start - got,
                });
            }
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
    /// side batch is read a batch at a time: in the pipeline if it is free,
    /// else on this thread.
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
            return self.store_chunks(buf, &lens, false, out);
        }
        advise_sequential(file, start, end);
        // Read around the page cache where the file allows: each batch goes
        // from the disk into an aligned buffer.
        let direct = start.is_multiple_of(ALIGN as u64) && aligned::set_direct(file, true);
        let lane = Lane::take();
        let mut batches = Batches {
            file,
            chunker: &self.chunker,
            off: start,
            end,
            batch: match lane {
                Lane::Pipeline => (((end - start) / 8) as usize)
                    .next_multiple_of(ALIGN)
                    .clamp(SIDE_BATCH, BATCH),
                Lane::Side => SIDE_BATCH,
            },
            room: self.chunker.max_size().next_multiple_of(ALIGN),
            direct,
            carry: Vec::new(),
        };
        let stored = match lane {
            Lane::Pipeline => self.pipelined(&mut batches, out),
            Lane::Side => self.beside(&mut batches, out),
        };
        // The file's other regions are read through the page cache.
        if batches.direct {
            aligned::set_direct(file, false);
        }
        stored
    }

    /// Reads a region's batches and stores their chunks on this thread, one
    /// buffer for them all.
    fn beside(&self, batches: &mut Batches, out: &mut Vec<Extent>) -> Result<()> {
        let mut slab = batches.buffer();
        while let Some((full, range, lens)) = batches.next(slab).map_err(SourceError)? {
            self.bytes_read.fetch_add(range.len() as u64, Ordering::Relaxed);
            self.store_chunks(&full[range], &lens, false, out)?;
            slab = full;
        }
        Ok(())
    }

    /// Reads a region's batches on a thread of their own, one batch ahead
    /// of the threads that hash, compress and seal its chunks.
    fn pipelined(&self, batches: &mut Batches, out: &mut Vec<Extent>) -> Result<()> {
        std::thread::scope(|s| {
            // Handed over, not queued: one batch read while the last is
            // processed, two buffers a file.
            let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Batch>>(0);
            // Batches processed come back to be filled again.
            let (back, spare) = std::sync::mpsc::channel::<AlignedBuf>();
            s.spawn(move || {
                loop {
                    let slab = spare.try_recv().unwrap_or_else(|_| batches.buffer());
                    let batch = match batches.next(slab) {
                        Ok(Some(b)) => b,
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    if tx.send(Ok(batch)).is_err() {
                        return;
                    }
                }
            });
            for batch in rx {
                let (slab, range, lens) = batch.map_err(SourceError)?;
                self.bytes_read.fetch_add(range.len() as u64, Ordering::Relaxed);
                self.store_chunks(&slab[range], &lens, true, out)?;
                let _ = back.send(slab);
            }
            Ok(())
        })
    }

    /// Stores consecutive chunks of `buf`, of lengths `lens`, in parallel
    /// or on this thread; appends their extents in order.
    fn store_chunks(&self, buf: &[u8], lens: &[usize], parallel: bool, out: &mut Vec<Extent>) -> Result<()> {
        let mut chunks = Vec::with_capacity(lens.len());
        let mut p = 0;
        for &l in lens {
            chunks.push(&buf[p..p + l]);
            p += l;
        }
        let store = |c: &&[u8]| self.writer.add_blob(BlobKind::Data, c);
        let ids: Vec<Id> = match parallel {
            true => chunks.par_iter().map(store).collect::<Result<_>>()?,
            false => chunks.iter().map(store).collect::<Result<_>>()?,
        };
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
