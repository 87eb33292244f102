//! The reading side, for the full key only: finds a blob in the index,
//! reads it from the disk cache of sealed blobs when one is in use and
//! holds it, else from its pack (neighbouring blobs of one pack in one
//! ranged read, kept in the disk cache once they open), and opens it under
//! its run's keys.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};

use crate::cache::Cache;
use crate::crypto::aead::OVERHEAD;
use crate::crypto::subkeys::hmac;
use crate::format::tree::Tree;
use crate::format::{BlobKind, Id};
use crate::keys::FullKey;

use super::Repository;
use super::blobcache::BlobCache;
use super::index::{Index, Location};
use super::runkeys::Keyring;
use crate::backend::Kind;

/// The largest tree blob read: a directory of a few million entries.
pub const MAX_TREE: u64 = 1 << 30;
/// The most bytes one ranged read of neighbouring blobs spans (bounded:
/// every prefetch thread holds one span while it opens its blobs).
pub const MAX_SPAN: u64 = 16 << 20;

/// Sealed blobs of one pack read together: the bytes from the first one's
/// offset to the last one's end.
pub struct Span {
    pub pack: Id,
    start: u64,
    bytes: Vec<u8>,
}

impl Span {
    /// The sealed bytes of a blob inside the span.
    pub fn sealed(&self, loc: &Location) -> Option<&[u8]> {
        if loc.pack != self.pack {
            return None;
        }
        let from = (loc.entry.offset as u64).checked_sub(self.start)? as usize;
        self.bytes.get(from..from.checked_add(loc.entry.length as usize)?)
    }
}

/// A blob's bytes where they were opened: a stored (uncompressed) blob
/// stays in the buffer it was decrypted into, behind its encoding byte, so
/// that using it takes no copy; [`Plain::into_vec`] makes it a vector of
/// its own.
pub struct Plain {
    buf: Vec<u8>,
    start: usize,
}

impl Plain {
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

impl std::ops::Deref for Plain {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Groups blobs for ranged reads: by pack, in offset order, a blob joining
/// the group before it when it starts after that group's end, at most
/// `max_gap` bytes later, and the group then spans at most `max_span`
/// bytes, or when it is the blob before it again. Each group is one
/// [`Reader::read_span`].
pub fn group_spans<T>(mut items: Vec<(Location, T)>, max_gap: u64, max_span: u64) -> Vec<Vec<(Location, T)>> {
    let ranges = span_ranges(&mut items, max_gap, max_span);
    let mut items = items.into_iter();
    ranges
        .into_iter()
        .map(|r| items.by_ref().take(r.len()).collect())
        .collect()
}

/// [`group_spans`] in place: sorts `items` and returns the groups as
/// ranges of it.
pub fn span_ranges<T>(items: &mut [(Location, T)], max_gap: u64, max_span: u64) -> Vec<Range<usize>> {
    items.sort_by_key(|(l, _)| (l.pack, l.entry.offset));
    let mut groups: Vec<Range<usize>> = Vec::new();
    for (i, (loc, _)) in items.iter().enumerate() {
        let joins = groups.last().is_some_and(|g| {
            let (first, prev) = (&items[g.start].0, &items[i - 1].0);
            let prev_end = prev.entry.offset as u64 + prev.entry.length as u64;
            let at = loc.entry.offset as u64;
            loc.pack == prev.pack
                && (same_place(loc, prev)
                    || (at >= prev_end
                        && at - prev_end <= max_gap
                        && at + loc.entry.length as u64 - first.entry.offset as u64 <= max_span))
        });
        match groups.last_mut() {
            Some(g) if joins => g.end = i + 1,
            _ => groups.push(i..i + 1),
        }
    }
    groups
}

/// Two locations of the same bytes of a pack (files with the same content
/// share their blob): read once for both.
fn same_place(a: &Location, b: &Location) -> bool {
    a.pack == b.pack && a.entry.offset == b.entry.offset && a.entry.length == b.entry.length
}

/// What a reader has asked of the packs so far.
#[derive(Default)]
pub struct Counters {
    /// Ranged reads of packs.
    pub pack_reads: AtomicU64,
    /// Blobs opened (decrypted and decompressed).
    pub blobs_opened: AtomicU64,
    /// Blobs found in the disk cache that opened.
    pub disk_hits: AtomicU64,
    /// Blobs the mount's read-ahead claimed, and the groups (each one
    /// ranged read at most) it split them into: what it decided, however
    /// many of them readers then loaded first.
    pub ahead_blobs: AtomicU64,
    pub ahead_groups: AtomicU64,
}

impl Counters {
    /// What was opened, and from where, in one line.
    pub fn opened(&self) -> String {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        format!(
            "opened {} blobs from {} pack reads and {} disk cache entries",
            load(&self.blobs_opened),
            load(&self.pack_reads),
            load(&self.disk_hits)
        )
    }
}

pub struct Reader<'a> {
    pub repo: &'a Repository,
    pub key: &'a FullKey,
    pub index: Index,
    keyring: Keyring<'a>,
    pub counters: Counters,
    cache: &'a Cache,
    disk: Option<BlobCache>,
}

impl<'a> Reader<'a> {
    pub fn open(repo: &'a Repository, key: &'a FullKey, cache: &'a Cache) -> Result<Reader<'a>> {
        let index = Index::load(repo.backend.as_ref(), &key.shared.subkeys, &repo.id(), cache)?;
        // A run's keys are unwrapped when one of its blobs is first read:
        // only the runs a command touches cost RSA work.
        let keyring = Keyring::new(repo, key, cache)?;
        Ok(Reader {
            repo,
            key,
            index,
            keyring,
            counters: Counters::default(),
            cache,
            disk: None,
        })
    }

    /// Keeps the sealed blobs read from now on in the cache directory, up
    /// to `bound` bytes, and reads blobs from there first. Without a usable
    /// cache directory (already warned about) blobs are not kept.
    pub fn use_disk_cache(&mut self, bound: u64) {
        if !self.cache.is_usable() {
            return;
        }
        self.disk = BlobCache::open(self.cache, &self.repo.id(), bound);
        if self.disk.is_none() {
            crate::warn(&format!(
                "the blob cache in {} cannot be used: blobs are cached in memory only",
                self.cache
                    .path()
                    .map_or_else(|| "the cache directory".to_string(), |p| p.display().to_string())
            ));
        }
    }

    /// Waits until the blobs read so far are kept in the disk cache (it
    /// is written in the background).
    pub fn flush_disk_cache(&self) {
        if let Some(disk) = &self.disk {
            disk.flush();
        }
    }

    /// The disk cache's entries and their bytes, if one is in use.
    pub fn disk_usage(&self) -> Option<(usize, u64)> {
        self.disk.as_ref().map(BlobCache::usage)
    }

    pub fn locate(&self, id: &Id) -> Result<Location> {
        self.index.get(id).ok_or_else(|| {
            anyhow!("blob {id} is not in the index (a pack is missing, or the index is incomplete)")
        })
    }

    /// The first location of a data blob.
    pub fn data_location(&self, id: &Id) -> Option<Location> {
        self.index.find_location(id, |l| l.entry.kind == BlobKind::Data)
    }

    /// The first location of a tree.
    pub fn tree_location(&self, id: &Id) -> Option<Location> {
        self.index.find_location(id, |l| l.entry.kind == BlobKind::Tree)
    }

    /// Reads, opens and decompresses a blob; with `verify`, recomputes its
    /// id. A blob stored in several packs is tried in each in turn (a pack
    /// may be missing, truncated or damaged); if all fail, the first
    /// failure is the error.
    pub fn read_blob(&self, id: &Id, verify: bool) -> Result<Vec<u8>> {
        self.read_kind(id, BlobKind::Data, verify).map(Plain::into_vec)
    }

    /// [`Reader::read_blob`], the bytes left where they were opened.
    pub fn read_blob_plain(&self, id: &Id, verify: bool) -> Result<Plain> {
        self.read_kind(id, BlobKind::Data, verify)
    }

    /// Reads a blob of `kind`, trying each location the index gives for
    /// it (only those of that kind: an entry claiming another kind for the
    /// id is not this blob).
    fn read_kind(&self, id: &Id, kind: BlobKind, verify: bool) -> Result<Plain> {
        let mut locations = self.index.locations(id);
        if locations.is_empty() {
            return Err(self.locate(id).unwrap_err());
        }
        locations.retain(|l| l.entry.kind == kind);
        if locations.is_empty() {
            bail!(
                "blob {id} is not a {}",
                if kind == BlobKind::Tree {
                    "tree"
                } else {
                    "data blob"
                }
            );
        }
        let mut first = None;
        for loc in &locations {
            match self.read_at(loc, verify) {
                Ok(data) => return Ok(data),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.expect("at least one location was tried"))
    }

    /// Refuses an index entry whose lengths no writer makes, before they
    /// size an allocation: a data blob is at most the chunker's largest
    /// chunk, a tree at most [`MAX_TREE`], and the stored form at most the
    /// plaintext plus its encoding byte and the AEAD overhead.
    fn check_lengths(&self, loc: &Location) -> Result<()> {
        let e = &loc.entry;
        let max = match e.kind {
            BlobKind::Data => self.repo.config.chunker.max as u64,
            BlobKind::Tree => MAX_TREE,
        };
        if e.raw_length as u64 > max || e.length as u64 > e.raw_length as u64 + 1 + OVERHEAD as u64 {
            bail!(
                "the index entry of blob {} in pack {} is damaged: {} bytes stored for {} ({:?})",
                e.id,
                loc.pack,
                e.length,
                e.raw_length,
                e.kind
            );
        }
        Ok(())
    }

    fn read_at(&self, loc: &Location, verify: bool) -> Result<Plain> {
        self.check_lengths(loc)?;
        if let Some(data) = self.read_cached_plain(loc, verify) {
            return Ok(data);
        }
        let id = &loc.entry.id;
        self.counters.pack_reads.fetch_add(1, Ordering::Relaxed);
        let sealed = self
            .repo
            .backend
            .read_range(
                Kind::Packs,
                &loc.pack.to_hex(),
                loc.entry.offset as u64,
                loc.entry.length as u64,
            )
            .with_context(|| format!("reading blob {id} from pack {}", loc.pack))?;
        if sealed.len() != loc.entry.length as usize {
            bail!(
                "reading blob {id} from pack {} failed: the pack is truncated",
                loc.pack
            );
        }
        self.open_fetched(loc, &sealed, verify)
    }

    /// The blob at `loc` from the disk cache, opened. An entry that does
    /// not open (damaged, or planted) is removed: the caller reads the
    /// pack instead.
    pub fn read_cached(&self, loc: &Location, verify: bool) -> Option<Vec<u8>> {
        self.read_cached_plain(loc, verify).map(Plain::into_vec)
    }

    fn read_cached_plain(&self, loc: &Location, verify: bool) -> Option<Plain> {
        let disk = self.disk.as_ref()?;
        // Without the run's keys nothing opens: that says nothing of the
        // entry, which stays.
        self.keyring.get(&loc.entry.run).ok()?;
        let sealed = disk.get(loc)?;
        match self.open_plain(loc, &sealed, verify) {
            Ok(data) => {
                self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                Some(data)
            }
            Err(_) => {
                disk.remove(loc);
                None
            }
        }
    }

    /// Opens a blob just read from its pack (see [`Reader::open_blob`]);
    /// if it opens, its sealed bytes are kept in the disk cache.
    fn open_fetched(&self, loc: &Location, sealed: &[u8], verify: bool) -> Result<Plain> {
        let data = self.open_plain(loc, sealed, verify)?;
        self.keep(loc, sealed);
        Ok(data)
    }

    /// Keeps the sealed bytes of a blob read from its pack in the disk
    /// cache, if one is in use: only once they opened with
    /// [`Reader::open_blob`].
    pub fn keep(&self, loc: &Location, sealed: &[u8]) {
        if let Some(disk) = &self.disk {
            disk.put(loc, sealed);
        }
    }

    /// Reads neighbouring blobs of one pack with one ranged read over
    /// their span (what lies between them included): `locs` are of one
    /// pack, in offset order, not overlapping (but one may be repeated,
    /// next to itself), spanning at most
    /// [`MAX_SPAN`] bytes. Each is then opened with [`Reader::open_blob`]
    /// and kept with [`Reader::keep`] (the disk cache is not consulted
    /// here: ask [`Reader::read_cached`] first).
    pub fn read_span(&self, locs: &[Location]) -> Result<Span> {
        let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
            bail!("no blobs to read");
        };
        let pack = first.pack;
        let mut end = first.entry.offset as u64;
        for (i, loc) in locs.iter().enumerate() {
            self.check_lengths(loc)?;
            let again = i > 0 && same_place(loc, &locs[i - 1]);
            if loc.pack != pack || (!again && (loc.entry.offset as u64) < end) {
                bail!(
                    "blob {} of pack {} is not after its neighbours in that pack",
                    loc.entry.id,
                    loc.pack
                );
            }
            end = loc.entry.offset as u64 + loc.entry.length as u64;
        }
        let start = first.entry.offset as u64;
        let len = last.entry.offset as u64 + last.entry.length as u64 - start;
        if len > MAX_SPAN {
            bail!("the blobs asked of pack {pack} span {len} bytes, more than one read takes");
        }
        self.counters.pack_reads.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .repo
            .backend
            .read_range(Kind::Packs, &pack.to_hex(), start, len)
            .with_context(|| format!("reading {} blobs from pack {pack}", locs.len()))?;
        if bytes.len() as u64 != len {
            bail!(
                "reading {} blobs from pack {pack} failed: the pack is truncated",
                locs.len()
            );
        }
        Ok(Span { pack, start, bytes })
    }

    /// Opens a sealed blob (from its pack or the disk cache).
    pub fn open_blob(&self, loc: &Location, sealed: &[u8], verify: bool) -> Result<Vec<u8>> {
        self.open_plain(loc, sealed, verify).map(Plain::into_vec)
    }

    /// [`Reader::open_blob`], the bytes left where they were opened.
    pub fn open_plain(&self, loc: &Location, sealed: &[u8], verify: bool) -> Result<Plain> {
        let plain = self.decrypt_blob(loc, sealed)?;
        let id = &loc.entry.id;
        let data = decompress(plain, loc.entry.raw_length as usize)
            .with_context(|| format!("blob {id} of pack {}", loc.pack))?;
        if verify && Id(hmac(&self.key.shared.subkeys.blob_id, &data)) != *id {
            bail!("blob {id} of pack {} does not match its id", loc.pack);
        }
        Ok(data)
    }

    /// That a blob opens and matches its id, without keeping its bytes: a
    /// stored one is hashed where it was decrypted.
    pub fn verify_blob(&self, loc: &Location, sealed: &[u8]) -> Result<()> {
        self.open_plain(loc, sealed, true).map(|_| ())
    }

    fn decrypt_blob(&self, loc: &Location, sealed: &[u8]) -> Result<Vec<u8>> {
        self.check_lengths(loc)?;
        let id = &loc.entry.id;
        self.counters.blobs_opened.fetch_add(1, Ordering::Relaxed);
        let keys = self
            .keyring
            .get(&loc.entry.run)
            .with_context(|| format!("opening blob {id} of pack {}", loc.pack))?;
        keys.open_blob(loc.entry.kind, id, &self.repo.id(), sealed)
            .map_err(|e| anyhow!("decrypting blob {id} of pack {} failed: {e}", loc.pack))
    }

    pub fn read_tree(&self, id: &Id) -> Result<Tree> {
        let bytes = self.read_kind(id, BlobKind::Tree, true)?;
        Tree::decode(&bytes, &format!("tree {id}"))
    }
}

/// The blob's bytes from its plaintext: a stored one in place (behind its
/// encoding byte, no second buffer), a compressed one decompressed.
fn decompress(plain: Vec<u8>, raw_length: usize) -> Result<Plain> {
    match plain.split_first() {
        Some((0, _)) => Ok(Plain { buf: plain, start: 1 }),
        Some((1, rest)) => {
            thread_local! {
                static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let out = DECOMPRESSOR
                .with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    d.as_mut().expect("set above").decompress(rest, raw_length)
                })
                .context("decompressing failed")?;
            if out.len() != raw_length {
                bail!("decompressed to {} bytes, expected {raw_length}", out.len());
            }
            Ok(Plain { buf: out, start: 0 })
        }
        _ => bail!("unknown blob encoding"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::BlobEntry;
    use crate::format::{BlobKind, Id, RunId};

    fn at(pack: u8, offset: u32, length: u32, blob: u8) -> (Location, u8) {
        let entry = BlobEntry {
            id: Id([blob; 32]),
            kind: BlobKind::Data,
            run: RunId([0; 16]),
            offset,
            length,
            raw_length: length,
        };
        (
            Location {
                pack: Id([pack; 32]),
                entry,
            },
            blob,
        )
    }

    fn grouped(mut items: Vec<(Location, u8)>) -> Vec<Vec<u8>> {
        let ranges = span_ranges(&mut items, 100, 1000);
        ranges
            .into_iter()
            .map(|r| items[r].iter().map(|(_, b)| *b).collect())
            .collect()
    }

    #[test]
    fn spans_join_neighbours_of_one_pack_within_the_gap_and_the_length() {
        let items = vec![
            at(2, 0, 10, 5),
            at(1, 300, 10, 3),
            at(1, 0, 100, 1),
            at(1, 150, 100, 2),
            at(1, 900, 200, 4),
        ];
        // Pack 1: 0..100 and 150..250 join (a gap of 50); 300..310 joins
        // (50); 900..1100 would make the span 1,100 bytes. Pack 2 apart.
        assert_eq!(grouped(items), vec![vec![1, 2, 3], vec![4], vec![5]]);
    }

    #[test]
    fn a_blob_shared_by_several_files_is_read_once_with_its_neighbours() {
        let items = vec![
            at(1, 0, 100, 1),
            at(1, 100, 50, 2),
            at(1, 0, 100, 3),
            at(1, 0, 90, 4),
        ];
        // The same place joins; the same offset with another length is not
        // the same blob, and overlaps: it starts a group of its own.
        assert_eq!(grouped(items), vec![vec![1, 3], vec![4, 2]]);
    }
}
