//! The blob index: which pack holds which blob, and under which run's keys.
//!
//! Loaded from the sealed `index/` files (through a sorted table in the
//! cache directory). One blob may have several locations (a blob whose
//! pack was lost and that a later backup uploaded again): all are kept.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::backend::{Backend, Kind};
use crate::cache::Cache;
use crate::crypto::subkeys::Subkeys;
use crate::crypto::{SecretKey, aead};
use crate::format::index::{self, BlobEntry, IndexFile, PackEntries};
use crate::format::{FORMAT_VERSION, Id, aad, decode, encode};

use super::sorted_index::SortedIndex;

/// Where a blob lives.
#[derive(Clone, Copy, Debug)]
pub struct Location {
    pub pack: Id,
    pub entry: BlobEntry,
}

/// The blob index: a sorted table mapped from the cache directory when
/// there is one, plus what was added since (or everything, in memory, when
/// no cache directory is writable).
#[derive(Default)]
pub struct Index {
    table: Option<SortedIndex>,
    added: HashMap<Id, Vec<Location>>,
    /// Every indexed pack, with the size the index records for it.
    packs: HashMap<Id, u64>,
}

const TABLES: &str = "index-table";
/// Index files read beside a cached table before it is rebuilt whole.
const MAX_FILES_OUTSIDE_TABLE: usize = 32;

fn table_name(sorted_names: &[String]) -> String {
    Id::of_bytes(sorted_names.join("\n").as_bytes()).to_hex()
}

/// A cached table whose index files all still exist, with their names.
fn find_table(
    cache: &Cache,
    key: &SecretKey,
    repo_id: &Id,
    current: &[String],
) -> Option<(SortedIndex, HashSet<String>)> {
    for name in cache.list(repo_id, TABLES) {
        if name.contains('.') {
            continue;
        }
        let Some(text) = cache.get(repo_id, &format!("{TABLES}/{name}.names")) else {
            continue;
        };
        let Ok(text) = String::from_utf8(text) else {
            continue;
        };
        let mut covered: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        covered.sort();
        if table_name(&covered) != name || !covered.iter().all(|c| current.binary_search(c).is_ok()) {
            continue;
        }
        // The MAC covers the name, which is the hash of the names covered:
        // neither an altered table nor an older one renamed is accepted.
        if let Some(f) = cache.open_file(repo_id, &format!("{TABLES}/{name}"))
            && let Ok(t) = SortedIndex::open(&f, key, &name)
        {
            return Some((t, covered.into_iter().collect()));
        }
    }
    None
}

impl Index {
    /// Opens the index: the cached table named after the current index
    /// files if it exists, else every index file (read in parallel), from
    /// which the table is built for next time. An index file that cannot be
    /// read is skipped with a warning naming it: `check` reports it and
    /// `repair index` replaces it, and the packs it named are found again
    /// from their headers.
    pub fn load(backend: &dyn Backend, subkeys: &Subkeys, repo_id: &Id, cache: &Cache) -> Result<Index> {
        let mut names: Vec<String> = backend
            .list(Kind::Index)
            .context("listing the index")?
            .into_iter()
            .map(|l| l.name)
            .collect();
        names.sort();
        let read = |which: &[&String]| -> (Vec<PackEntries>, Vec<String>) {
            let files = read_index_files(backend, subkeys, repo_id, which);
            for (name, e) in &files.unreadable {
                crate::warn(&format!(
                    "index file {name} is skipped: {e:#} (`strongroom check` reports it, `strongroom repair index` replaces it)"
                ));
            }
            (files.packs, files.read)
        };
        // A table built from some of today's index files, plus the few
        // written since: a backup does not re-read the whole index.
        if let Some((table, covered)) = find_table(cache, &subkeys.cache, repo_id, &names) {
            let missing: Vec<&String> = names.iter().filter(|n| !covered.contains(*n)).collect();
            // Most of the index outside the table (a young repository): the
            // table is rebuilt, which costs little more than reading the
            // files outside it, and holds them in a fraction of the memory.
            if missing.len() <= MAX_FILES_OUTSIDE_TABLE && missing.len() * 2 < names.len() {
                let mut index = Index::from_table(table);
                for p in read(&missing).0 {
                    index.insert_pack(&p);
                }
                return Ok(index);
            }
        }
        let (packs, names) = read(&names.iter().collect::<Vec<_>>());
        let table_name = table_name(&names);
        let table_path = format!("{TABLES}/{table_name}");
        if cache.is_usable() {
            cache.put(
                repo_id,
                &format!("{table_path}.names"),
                names.join("\n").as_bytes(),
            );
            cache.put(
                repo_id,
                &table_path,
                &SortedIndex::build(&packs, &subkeys.cache, &table_name),
            );
            if let Some(f) = cache.open_file(repo_id, &table_path)
                && let Ok(t) = SortedIndex::open(&f, &subkeys.cache, &table_name)
            {
                cache.remove_others(repo_id, TABLES, &table_name);
                return Ok(Index::from_table(t));
            }
        }
        Ok(Index::from_packs(&packs))
    }

    /// An index held in memory, from entries at hand.
    pub fn from_packs(packs: &[PackEntries]) -> Index {
        let mut index = Index::default();
        for p in packs {
            index.insert_pack(p);
        }
        index
    }

    fn from_table(t: SortedIndex) -> Index {
        let packs = t.pack_sizes().collect();
        Index {
            table: Some(t),
            added: HashMap::new(),
            packs,
        }
    }

    /// Adds a pack's entries. A blob already indexed elsewhere keeps that
    /// location too: readers try each in turn. A pack named again adds the
    /// locations it did not have (an index file that names a pack with no
    /// or other blobs hides nothing); its first recorded size stays.
    pub fn insert_pack(&mut self, p: &PackEntries) {
        let known = self.packs.contains_key(&p.pack);
        self.packs.entry(p.pack).or_insert(p.size);
        // Of a pack named again, the entries it has already, each id's
        // looked up once (a hostile index file may repeat one id a million
        // times).
        let mut have: HashSet<BlobEntry> = HashSet::new();
        let mut looked_up: HashSet<Id> = HashSet::new();
        for e in &p.blobs {
            if known {
                if looked_up.insert(e.id) {
                    have.extend(
                        self.locations(&e.id)
                            .iter()
                            .filter(|l| l.pack == p.pack)
                            .map(|l| l.entry),
                    );
                }
                if !have.insert(*e) {
                    continue;
                }
            }
            self.added.entry(e.id).or_default().push(Location {
                pack: p.pack,
                entry: *e,
            });
        }
    }

    /// The first location of a blob.
    pub fn get(&self, id: &Id) -> Option<Location> {
        self.find_location(id, |_| true)
    }

    /// Every location of a blob.
    pub fn locations(&self, id: &Id) -> Vec<Location> {
        let mut v = self.table.as_ref().map(|t| t.get_all(id)).unwrap_or_default();
        if let Some(more) = self.added.get(id) {
            v.extend_from_slice(more);
        }
        v
    }

    /// The first location of a blob that `usable` accepts.
    pub fn find_location(&self, id: &Id, usable: impl Fn(&Location) -> bool) -> Option<Location> {
        if let Some(l) = self.added.get(id).and_then(|v| v.iter().find(|l| usable(l))) {
            return Some(*l);
        }
        self.table.as_ref()?.get_all(id).into_iter().find(|l| usable(l))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.packs.contains_key(id)
    }

    /// The size the index records for a pack.
    pub fn pack_size(&self, id: &Id) -> Option<u64> {
        self.packs.get(id).copied()
    }

    pub fn packs(&self) -> impl Iterator<Item = &Id> {
        self.packs.keys()
    }

    pub fn blobs(&self) -> impl Iterator<Item = Location> + '_ {
        self.table
            .iter()
            .flat_map(|t| t.iter())
            .chain(self.added.values().flatten().copied())
    }

    pub fn len(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.len()) + self.added.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What reading a set of index files gave: their entries, the names read,
/// and the files that could not be read, with why.
pub struct IndexFiles {
    pub packs: Vec<PackEntries>,
    pub read: Vec<String>,
    pub unreadable: Vec<(String, anyhow::Error)>,
}

/// Reads and verifies index files, in parallel; one that fails is set
/// aside, never fatal.
pub fn read_index_files(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    names: &[&String],
) -> IndexFiles {
    let results: Vec<(String, Result<IndexFile>)> = names
        .par_iter()
        .map(|n| (n.to_string(), read_index_file(backend, subkeys, repo_id, n)))
        .collect();
    let mut out = IndexFiles {
        packs: Vec::new(),
        read: Vec::new(),
        unreadable: Vec::new(),
    };
    for (name, r) in results {
        match r {
            Ok(f) => {
                out.packs.extend(f.packs);
                out.read.push(name);
            }
            Err(e) => out.unreadable.push((name, e)),
        }
    }
    out
}

pub fn read_index_file(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    name: &str,
) -> Result<IndexFile> {
    let bytes = crate::backend::read_bounded(backend, Kind::Index, name)
        .with_context(|| format!("reading index file {name}"))?;
    if Id::of_bytes(&bytes).to_hex() != name {
        bail!("index file {name} is damaged: its content does not match its name");
    }
    let plain = aead::open_salted(&subkeys.index, &aad(index::SEAL_KIND, repo_id, &[]), &bytes)
        .map_err(|e| anyhow!("opening index file {name} failed: {e}"))?;
    let file: IndexFile = decode(&plain, &format!("index file {name}"))?;
    if file.format != FORMAT_VERSION {
        bail!(
            "index file {name} has format {}, expected {FORMAT_VERSION}",
            file.format
        );
    }
    Ok(file)
}

/// Seals and writes one index file; returns its name.
pub fn write_index_file(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    packs: Vec<PackEntries>,
) -> Result<Id> {
    write_index_file_with(backend, &subkeys.index, repo_id, packs)
}

/// [`write_index_file`] with the index subkey alone.
pub fn write_index_file_with(
    backend: &dyn Backend,
    index_key: &SecretKey,
    repo_id: &Id,
    packs: Vec<PackEntries>,
) -> Result<Id> {
    let file = IndexFile {
        format: FORMAT_VERSION,
        packs,
    };
    let sealed = aead::seal_salted(index_key, &aad(index::SEAL_KIND, repo_id, &[]), &encode(&file))?;
    let id = Id::of_bytes(&sealed);
    backend
        .write(Kind::Index, &id.to_hex(), &sealed)
        .with_context(|| format!("writing index file {id}"))?;
    Ok(id)
}
