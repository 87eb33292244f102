//! The blob index: which pack holds which blob, and under which run's keys.
//!
//! Loaded whole into memory from the sealed `index/` files. Packs that no
//! index file names (an interrupted backup's) are indexed again from their
//! sealed headers, so their blobs are reused rather than uploaded again.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::backend::{Backend, Kind};
use crate::cache::Cache;
use crate::crypto::subkeys::Subkeys;
use crate::crypto::{SecretKey, aead};
use crate::format::index::{self, BlobEntry, IndexFile, PackEntries};
use crate::format::pack::{self, PackHeader, TRAILER_LEN};
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
    added: HashMap<Id, Location>,
    packs: HashSet<Id>,
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
    /// which the table is built for next time.
    pub fn load(backend: &dyn Backend, subkeys: &Subkeys, repo_id: &Id, cache: &Cache) -> Result<Index> {
        let mut names: Vec<String> = backend
            .list(Kind::Index)
            .context("listing the index")?
            .into_iter()
            .map(|l| l.name)
            .collect();
        names.sort();
        let read = |which: &[&String]| -> Result<Vec<PackEntries>> {
            let files: Vec<IndexFile> = which
                .par_iter()
                .map(|n| read_index_file(backend, subkeys, repo_id, n))
                .collect::<Result<_>>()?;
            Ok(files.into_iter().flat_map(|f| f.packs).collect())
        };
        // A table built from some of today's index files, plus the few
        // written since: a backup does not re-read the whole index.
        if let Some((table, covered)) = find_table(cache, &subkeys.cache, repo_id, &names) {
            let missing: Vec<&String> = names.iter().filter(|n| !covered.contains(*n)).collect();
            if missing.len() <= MAX_FILES_OUTSIDE_TABLE {
                let mut index = Index::from_table(table);
                for p in read(&missing)? {
                    index.insert_pack(&p);
                }
                return Ok(index);
            }
        }
        let packs = read(&names.iter().collect::<Vec<_>>())?;
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
        let mut index = Index::default();
        for p in &packs {
            index.insert_pack(p);
        }
        Ok(index)
    }

    fn from_table(t: SortedIndex) -> Index {
        let packs = t.packs().collect();
        Index {
            table: Some(t),
            added: HashMap::new(),
            packs,
        }
    }

    pub fn insert_pack(&mut self, p: &PackEntries) {
        self.packs.insert(p.pack);
        for e in &p.blobs {
            if !self.contains(&e.id) {
                self.added.insert(
                    e.id,
                    Location {
                        pack: p.pack,
                        entry: *e,
                    },
                );
            }
        }
    }

    pub fn get(&self, id: &Id) -> Option<Location> {
        if let Some(l) = self.added.get(id) {
            return Some(*l);
        }
        self.table.as_ref()?.get(id)
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.packs.contains(id)
    }

    pub fn packs(&self) -> impl Iterator<Item = &Id> {
        self.packs.iter()
    }

    pub fn blobs(&self) -> impl Iterator<Item = Location> + '_ {
        self.table
            .iter()
            .flat_map(|t| t.iter())
            .chain(self.added.values().copied())
    }

    pub fn len(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.len()) + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn read_index_file(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    name: &str,
) -> Result<IndexFile> {
    let bytes = backend
        .read(Kind::Index, name)
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
    let file = IndexFile {
        format: FORMAT_VERSION,
        packs,
    };
    let sealed = aead::seal_salted(
        &subkeys.index,
        &aad(index::SEAL_KIND, repo_id, &[]),
        &encode(&file),
    )?;
    let id = Id::of_bytes(&sealed);
    backend
        .write(Kind::Index, &id.to_hex(), &sealed)
        .with_context(|| format!("writing index file {id}"))?;
    Ok(id)
}

/// Reads a pack's sealed header from its tail.
pub fn read_pack_header(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    pack: &Id,
    size: u64,
) -> Result<Vec<BlobEntry>> {
    let name = pack.to_hex();
    if size < TRAILER_LEN as u64 {
        bail!("pack {name} is too short to be a pack");
    }
    let trailer = backend.read_range(Kind::Packs, &name, size - TRAILER_LEN as u64, TRAILER_LEN as u64)?;
    let hlen = pack::parse_trailer(&trailer).with_context(|| format!("pack {name}"))? as u64;
    if hlen + TRAILER_LEN as u64 > size {
        bail!("pack {name} is damaged: its header length is out of range");
    }
    let sealed = backend.read_range(Kind::Packs, &name, size - TRAILER_LEN as u64 - hlen, hlen)?;
    parse_pack_header(subkeys, repo_id, pack, &sealed, size)
}

pub fn parse_pack_header(
    subkeys: &Subkeys,
    repo_id: &Id,
    pack: &Id,
    sealed: &[u8],
    size: u64,
) -> Result<Vec<BlobEntry>> {
    let plain = aead::open_salted(&subkeys.index, &aad(pack::SEAL_KIND, repo_id, &[]), sealed)
        .map_err(|e| anyhow!("opening the header of pack {pack} failed: {e}"))?;
    let header: PackHeader = decode(&plain, &format!("the header of pack {pack}"))?;
    let data_end = size - TRAILER_LEN as u64 - sealed.len() as u64;
    for e in &header.blobs {
        if e.offset as u64 + e.length as u64 > data_end {
            bail!("pack {pack} is damaged: blob {} lies outside its data", e.id);
        }
    }
    Ok(header.blobs)
}
