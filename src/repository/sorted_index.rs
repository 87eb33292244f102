//! The index as a sorted, memory-mapped table in the cache directory, so a
//! large repository's index need not fit in memory and opening it needs no
//! decryption once the table exists.
//!
//! The file is named by the SHA-256 of the sorted index file names it was
//! built from: any new index file makes a new table. Layout (little-endian):
//! `MAGIC`, pack count, run count, blob count (u64 each), the pack ids
//! (32 bytes each), the pack sizes (u64 each), the run ids (16 bytes each),
//! then one 56-byte record per blob location, sorted by blob id (a blob
//! stored in several packs has one record for each, neighbours): id(32)
//! pack#(4) run#(4) offset(4) length(4) raw_length(4) kind(1) pad(3); last,
//! the HMAC-SHA256 under the cache subkey of the table's name and all that.
//! A damaged or forged table (one another local user altered, or an older
//! one put under a newer name) fails that check and is rebuilt: damage
//! costs work, never a read.

use std::collections::HashMap;
use std::fs::File;

use anyhow::{Result, bail};
use memmap2::Mmap;

use crate::crypto::SecretKey;
use crate::crypto::subkeys::{hmac_parts, verify_parts};
use crate::format::index::{BlobEntry, PackEntries};
use crate::format::{BlobKind, Id, RunId};

use super::index::Location;

const MAGIC: &[u8; 8] = b"SRIDX002";
const HEADER: usize = 32;
const RECORD: usize = 56;
/// Probes of [`SortedIndex::lower_bound`] placed by the ids' values.
const GUESSES: u32 = 6;
const MAC_LEN: usize = 32;

/// An id's first eight bytes, as a number in the ids' order.
fn prefix(id: &[u8]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("ids are 32 bytes"))
}

pub struct SortedIndex {
    map: Mmap,
    packs: usize,
    runs: usize,
    blobs: usize,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl SortedIndex {
    /// Serialises entries into the table format, authenticated under `key`
    /// for the table name `name`; every location of a blob is kept (a pack
    /// named twice counts once).
    pub fn build(files: &[PackEntries], key: &SecretKey, name: &str) -> Vec<u8> {
        let mut pack_no: HashMap<Id, u32> = HashMap::new();
        let mut run_no: HashMap<RunId, u32> = HashMap::new();
        let mut packs: Vec<(Id, u64)> = Vec::new();
        let mut runs = Vec::new();
        let mut records: Vec<(Id, u32, u32, BlobEntry)> = Vec::new();
        for p in files {
            // A pack named twice keeps its first size and every location
            // either names: a forged entry naming a pack with no blobs must
            // not hide the real ones.
            let pn = *pack_no.entry(p.pack).or_insert_with(|| {
                packs.push((p.pack, p.size));
                (packs.len() - 1) as u32
            });
            for e in &p.blobs {
                let rn = *run_no.entry(e.run).or_insert_with(|| {
                    runs.push(e.run);
                    (runs.len() - 1) as u32
                });
                records.push((e.id, pn, rn, *e));
            }
        }
        records.sort_by_key(|r| {
            (
                r.0,
                r.1,
                r.3.offset,
                r.3.length,
                r.2,
                r.3.raw_length,
                r.3.kind.tag(),
            )
        });
        records.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3);
        let mut out =
            Vec::with_capacity(HEADER + packs.len() * 40 + runs.len() * 16 + records.len() * RECORD);
        out.extend_from_slice(MAGIC);
        for n in [packs.len(), runs.len(), records.len()] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for (p, _) in &packs {
            out.extend_from_slice(&p.0);
        }
        for (_, size) in &packs {
            out.extend_from_slice(&size.to_le_bytes());
        }
        for r in &runs {
            out.extend_from_slice(&r.0);
        }
        for (id, pn, rn, e) in &records {
            out.extend_from_slice(&id.0);
            for v in [*pn, *rn, e.offset, e.length, e.raw_length] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&[e.kind.tag(), 0, 0, 0]);
        }
        Self::authenticate(out, key, name)
    }

    /// Appends the MAC that [`SortedIndex::open`] checks to a table body.
    pub fn authenticate(mut body: Vec<u8>, key: &SecretKey, name: &str) -> Vec<u8> {
        let mac = hmac_parts(key, &mac_parts(name, &body));
        body.extend_from_slice(&mac);
        body
    }

    /// Maps a table, checks its MAC for the name it was looked up by, and
    /// that its header and size agree.
    pub fn open(f: &File, key: &SecretKey, name: &str) -> Result<SortedIndex> {
        // SAFETY: the cache file is written once (atomically, by rename) and
        // never modified in place by strongroom; the MAC is checked on the
        // mapping itself, and the directory is this user's alone.
        let map = unsafe { Mmap::map(f)? };
        if map.len() < HEADER + MAC_LEN || &map[..8] != MAGIC {
            bail!("index table {name} is not an index table");
        }
        let body = map.len() - MAC_LEN;
        if !verify_parts(key, &mac_parts(name, &map[..body]), &map[body..]) {
            bail!("index table {name} is damaged or was not made with this repository's key");
        }
        let (packs, runs, blobs) = (u64_at(&map, 8), u64_at(&map, 16), u64_at(&map, 24));
        let want = (HEADER as u128) + packs as u128 * 40 + runs as u128 * 16 + blobs as u128 * RECORD as u128;
        if want != body as u128 {
            bail!("index table {name}: its size does not match its header");
        }
        Ok(SortedIndex {
            map,
            packs: packs as usize,
            runs: runs as usize,
            blobs: blobs as usize,
        })
    }

    fn records_at(&self) -> usize {
        HEADER + self.packs * 40 + self.runs * 16
    }

    fn pack(&self, n: usize) -> Option<Id> {
        (n < self.packs).then(|| {
            Id(self.map[HEADER + n * 32..HEADER + n * 32 + 32]
                .try_into()
                .expect("32"))
        })
    }

    fn run(&self, n: usize) -> Option<RunId> {
        let at = HEADER + self.packs * 40 + n * 16;
        (n < self.runs).then(|| RunId(self.map[at..at + 16].try_into().expect("16")))
    }

    fn id_at(&self, i: usize) -> &[u8] {
        let at = self.records_at() + i * RECORD;
        &self.map[at..at + 32]
    }

    fn location(&self, i: usize) -> Option<Location> {
        let at = self.records_at() + i * RECORD;
        let r = &self.map[at..at + RECORD];
        let kind = match r[52] {
            0 => BlobKind::Data,
            1 => BlobKind::Tree,
            _ => return None,
        };
        Some(Location {
            pack: self.pack(u32_at(r, 32) as usize)?,
            entry: BlobEntry {
                id: Id(r[..32].try_into().expect("32")),
                kind,
                run: self.run(u32_at(r, 36) as usize)?,
                offset: u32_at(r, 40),
                length: u32_at(r, 44),
                raw_length: u32_at(r, 48),
            },
        })
    }

    /// The first record whose id is not less than `id`.
    ///
    /// Ids are hashes, spread evenly: each of the first probes goes where
    /// the id would lie between the ids at the ends of the range still
    /// open. Over 3,000 such ids that takes 4.1 probes on average, where
    /// halving takes 12 (17 over 100,000 blobs, each probe a cache miss).
    /// Whatever a table holds, every probe narrows the range, and after
    /// [`GUESSES`] of them the rest halve it.
    fn lower_bound(&self, id: &Id) -> usize {
        self.lower_bound_probing(id).0
    }

    /// [`SortedIndex::lower_bound`], with the number of probes it took.
    fn lower_bound_probing(&self, id: &Id) -> (usize, u32) {
        let want = &id.0[..];
        let key = prefix(want);
        // Ids before `lo` are less than `id`, ids from `hi` on are not; the
        // first eight bytes of the ids at the ends, as far as known.
        let (mut lo, mut hi) = (0, self.blobs);
        let (mut lo_key, mut hi_key) = (0u64, u64::MAX);
        let (mut guesses, mut probes) = (0, 0);
        while lo < hi {
            probes += 1;
            let mid = if guesses < GUESSES && key >= lo_key && key <= hi_key && hi_key > lo_key {
                guesses += 1;
                let along = (key - lo_key) as u128 * (hi - lo) as u128 / ((hi_key - lo_key) as u128 + 1);
                lo + along as usize
            } else {
                lo + (hi - lo) / 2
            };
            let at = self.id_at(mid);
            if at < want {
                lo = mid + 1;
                lo_key = prefix(at);
            } else {
                hi = mid;
                hi_key = prefix(at);
            }
        }
        (lo, probes)
    }

    /// Every location of a blob, in the order of their packs' numbers.
    pub fn get_all(&self, id: &Id) -> Vec<Location> {
        (self.lower_bound(id)..self.blobs)
            .take_while(|&i| self.id_at(i) == &id.0[..])
            .filter_map(|i| self.location(i))
            .collect()
    }

    /// The first location of a blob.
    pub fn get(&self, id: &Id) -> Option<Location> {
        let i = self.lower_bound(id);
        (i < self.blobs && self.id_at(i) == &id.0[..])
            .then(|| self.location(i))
            .flatten()
    }

    pub fn len(&self) -> usize {
        self.blobs
    }

    pub fn is_empty(&self) -> bool {
        self.blobs == 0
    }

    pub fn packs(&self) -> impl Iterator<Item = Id> + '_ {
        (0..self.packs).filter_map(|n| self.pack(n))
    }

    /// Every pack with the size the index records for it.
    pub fn pack_sizes(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        (0..self.packs)
            .filter_map(|n| Some((self.pack(n)?, u64_at(&self.map, HEADER + self.packs * 32 + n * 8))))
    }

    pub fn iter(&self) -> impl Iterator<Item = Location> + '_ {
        (0..self.blobs).filter_map(|i| self.location(i))
    }
}

fn mac_parts<'a>(name: &'a str, body: &'a [u8]) -> [&'a [u8]; 3] {
    [b"strongroom index table", name.as_bytes(), body]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_what_halving_finds_in_even_and_uneven_tables() {
        use sha2::Digest;
        let key = SecretKey([7; 32]);
        let dir = tempfile::tempdir().unwrap();
        let hashed = |i: u32| Id(sha2::Sha256::digest(i.to_le_bytes()).into());
        // Hashes (spread evenly), then ids bunched at both ends and
        // sharing long prefixes (as a hostile table may be).
        let uneven = |i: u32| {
            let mut id = [0u8; 32];
            id[0] = if i.is_multiple_of(2) { 0 } else { 255 };
            id[1..5].copy_from_slice(&(i / 7).to_be_bytes());
            id[31] = i as u8;
            Id(id)
        };
        for (name, make) in [("even", &hashed as &dyn Fn(u32) -> Id), ("uneven", &uneven)] {
            let blobs: Vec<BlobEntry> = (0..3000)
                .map(|i| BlobEntry {
                    id: make(i),
                    kind: BlobKind::Data,
                    run: RunId([1; 16]),
                    offset: i,
                    length: 1,
                    raw_length: 1,
                })
                .collect();
            let mut ids: Vec<Id> = blobs.iter().map(|b| b.id).collect();
            ids.sort();
            let files = vec![PackEntries {
                pack: Id([9; 32]),
                size: 1 << 20,
                blobs,
            }];
            let p = dir.path().join(name);
            std::fs::write(&p, SortedIndex::build(&files, &key, name)).unwrap();
            let t = SortedIndex::open(&File::open(&p).unwrap(), &key, name).unwrap();
            let mut asked: Vec<Id> = ids.clone();
            asked.extend((5000..6000).map(&make));
            asked.extend([Id([0; 32]), Id([255; 32]), Id([128; 32])]);
            let mut probes = 0;
            for id in &asked {
                let want = ids.partition_point(|x| x < id);
                let (got, n) = t.lower_bound_probing(id);
                assert_eq!(got, want, "{name}: {id}");
                assert_eq!(t.get(id).is_some(), ids.binary_search(id).is_ok(), "{name}: {id}");
                // However uneven: six guesses, then halving (12 for 3,000).
                assert!(n <= 6 + 12, "{name}: {n} probes for {id}");
                probes += n;
            }
            let mean = probes as f64 / asked.len() as f64;
            eprintln!("{name}: {mean:.1} probes on average, where halving takes 12");
            if name == "even" {
                assert!(mean < 5.0, "{mean}");
            }
        }
    }

    #[test]
    fn table_round_trip_and_lookup() {
        let entry = |i: u8, run: u8| BlobEntry {
            id: Id([i; 32]),
            kind: if i.is_multiple_of(2) {
                BlobKind::Data
            } else {
                BlobKind::Tree
            },
            run: RunId([run; 16]),
            offset: i as u32 * 10,
            length: 7,
            raw_length: 9,
        };
        let files = vec![
            PackEntries {
                pack: Id([200; 32]),
                size: 1000,
                blobs: vec![entry(5, 1), entry(3, 1)],
            },
            PackEntries {
                pack: Id([201; 32]),
                size: 2000,
                blobs: vec![entry(9, 2), entry(3, 2)],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let key = SecretKey([7; 32]);
        let open = |p: &std::path::Path, name: &str| SortedIndex::open(&File::open(p).unwrap(), &key, name);
        std::fs::write(&p, SortedIndex::build(&files, &key, "t1")).unwrap();
        let t = open(&p, "t1").unwrap();
        // Blob 3 is in both packs: both locations are kept, in pack order.
        assert_eq!(t.len(), 4);
        let l = t.get(&Id([9; 32])).unwrap();
        assert_eq!((l.pack, l.entry), (Id([201; 32]), entry(9, 2)));
        assert_eq!(t.get(&Id([3; 32])).unwrap().pack, Id([200; 32]));
        let all: Vec<_> = t
            .get_all(&Id([3; 32]))
            .iter()
            .map(|l| (l.pack, l.entry))
            .collect();
        assert_eq!(
            all,
            vec![(Id([200; 32]), entry(3, 1)), (Id([201; 32]), entry(3, 2))]
        );
        assert!(t.get(&Id([4; 32])).is_none());
        assert!(t.get_all(&Id([4; 32])).is_empty());
        assert!(t.get_all(&Id([10; 32])).is_empty());
        assert_eq!(t.packs().count(), 2);
        let sizes: Vec<_> = t.pack_sizes().collect();
        assert_eq!(sizes, vec![(Id([200; 32]), 1000), (Id([201; 32]), 2000)]);
        assert_eq!(t.iter().count(), 4);
        // A table under another name, or under another key, is refused.
        assert!(open(&p, "t2").is_err());
        assert!(SortedIndex::open(&File::open(&p).unwrap(), &SecretKey([8; 32]), "t1").is_err());
        // A truncated or altered table is refused, not misread.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(open(&p, "t1").is_err());
        let mut altered = bytes.clone();
        altered[HEADER + 2 * 40 + 2 * 16 + 40] ^= 1;
        std::fs::write(&p, &altered).unwrap();
        assert!(open(&p, "t1").is_err());
    }
}
