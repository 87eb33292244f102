//! What a prune will do, decided from the index, the packs listed and the
//! blobs the snapshots reference: which copy of each referenced blob is
//! kept, which packs are kept, repacked or deleted, and which index files
//! are rewritten. Pure: no storage is touched here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{Result, bail};

use crate::format::index::{BlobEntry, PackEntries};
use crate::format::{BlobKind, Id};

/// A blob as snapshots reference it: its id and kind.
pub type BlobRef = (Id, BlobKind);

/// How much unused space to tolerate in packs still partly used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// Unused bytes at most this percentage of all the bytes kept (used
    /// plus unused), as restic counts it.
    Percent(f64),
    Unlimited,
}

impl MaxUnused {
    pub fn parse(s: &str) -> Option<MaxUnused> {
        if s == "unlimited" {
            return Some(MaxUnused::Unlimited);
        }
        let p: f64 = s.strip_suffix('%').unwrap_or(s).parse().ok()?;
        if !(0.0..=100.0).contains(&p) {
            return None;
        }
        Some(if p >= 100.0 {
            MaxUnused::Unlimited
        } else {
            MaxUnused::Percent(p)
        })
    }

    /// The unused bytes tolerated beside `used` bytes in use.
    fn limit(self, used: u64) -> u64 {
        match self {
            MaxUnused::Unlimited => u64::MAX,
            MaxUnused::Percent(p) => (p / (100.0 - p) * used as f64) as u64,
        }
    }
}

/// One index file as read: its name and the packs it names.
pub struct IndexFileIn {
    pub name: String,
    pub packs: Vec<PackEntries>,
}

/// What the planner is given.
pub struct Input<'a> {
    pub files: &'a [IndexFileIn],
    /// Packs in storage no index file names, with the entries their
    /// verified headers give.
    pub unindexed: &'a [PackEntries],
    /// Every object under `packs/`, with its size.
    pub listed: &'a HashMap<Id, u64>,
    pub used: &'a HashSet<BlobRef>,
    /// Copies found bad on reading: never chosen.
    pub excluded: &'a HashSet<(Id, BlobEntry)>,
    pub max_unused: MaxUnused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Keep,
    Repack,
    Delete,
}

/// A pack the plan decides about.
pub struct PackPlan {
    pub size: u64,
    pub fate: Fate,
    /// Whether an index file names it.
    pub indexed: bool,
    /// The copies kept from it (all of them when kept; those moved when
    /// repacked).
    pub chosen: Vec<BlobEntry>,
    pub entries: usize,
    pub unused_bytes: u64,
}

pub struct Plan {
    pub packs: BTreeMap<Id, PackPlan>,
    /// Indexed packs missing from storage (their entries are dropped).
    pub missing: BTreeSet<Id>,
    /// Packs some index file records with another size than they have:
    /// left as they are, and never a copy chosen.
    pub damaged: BTreeSet<Id>,
    /// Index files naming a pack that goes or changes: rewritten.
    pub rewrite: BTreeSet<String>,
    /// Chosen copies of blobs with several copies: read and verified
    /// before anything is written or deleted.
    pub verify: Vec<(Id, BlobEntry)>,
    pub used_bytes: u64,
    pub unused_after: u64,
}

impl Plan {
    pub fn count(&self, fate: Fate) -> usize {
        self.packs.values().filter(|p| p.fate == fate).count()
    }

    pub fn bytes(&self, fate: Fate) -> u64 {
        self.packs
            .values()
            .filter(|p| p.fate == fate)
            .map(|p| p.size)
            .sum()
    }
}

struct Candidate {
    size: u64,
    indexed: bool,
    entries: Vec<BlobEntry>,
}

/// Decides. Fails, deleting nothing, when a referenced blob has no copy in
/// a pack that exists intact.
pub fn make(input: &Input) -> Result<Plan> {
    let mut packs: BTreeMap<Id, Candidate> = BTreeMap::new();
    let mut missing = BTreeSet::new();
    // A pack any index file records with another size than it has is
    // damaged, or named by a forged entry: none of its copies is chosen,
    // and it is neither deleted nor repacked.
    let mut damaged = BTreeSet::new();
    for p in input.files.iter().flat_map(|f| &f.packs) {
        match input.listed.get(&p.pack) {
            None => {
                missing.insert(p.pack);
            }
            Some(size) if *size != p.size => {
                damaged.insert(p.pack);
            }
            Some(_) => {}
        }
    }
    for p in input.files.iter().flat_map(|f| &f.packs) {
        if missing.contains(&p.pack) || damaged.contains(&p.pack) {
            continue;
        }
        let c = packs.entry(p.pack).or_insert_with(|| Candidate {
            size: p.size,
            indexed: true,
            entries: Vec::new(),
        });
        c.entries.extend_from_slice(&p.blobs);
    }
    for p in input.unindexed {
        packs.entry(p.pack).or_insert_with(|| Candidate {
            size: p.size,
            indexed: false,
            entries: p.blobs.clone(),
        });
    }
    for c in packs.values_mut() {
        c.entries.sort_by_key(|e| (e.offset, e.id.0, e.length));
        c.entries.dedup();
    }

    // Where each referenced blob has a copy; the copy kept is the one in
    // the pack with the most referenced bytes (then the lowest pack id),
    // so duplicates gather in packs that stay whole.
    let mut referenced_bytes: HashMap<Id, u64> = HashMap::new();
    let mut copies: HashMap<BlobRef, Vec<(Id, BlobEntry)>> = HashMap::new();
    // Copies of each referenced blob, those found bad included.
    let mut all_copies: HashMap<BlobRef, usize> = HashMap::new();
    for (pack, c) in &packs {
        for e in &c.entries {
            if input.used.contains(&(e.id, e.kind)) {
                *all_copies.entry((e.id, e.kind)).or_default() += 1;
                if !input.excluded.contains(&(*pack, *e)) {
                    *referenced_bytes.entry(*pack).or_default() += e.length as u64;
                    copies.entry((e.id, e.kind)).or_default().push((*pack, *e));
                }
            }
        }
    }
    let mut chosen: HashMap<Id, Vec<BlobEntry>> = HashMap::new();
    let mut duplicated: Vec<(Id, BlobEntry)> = Vec::new();
    let mut lost: Vec<&BlobRef> = input.used.iter().filter(|b| !copies.contains_key(b)).collect();
    if !lost.is_empty() {
        lost.sort_by_key(|b| b.0);
        bail!(
            "{} referenced blob(s) are in no pack that exists intact (the first: {} blob {}); prune deletes nothing \
             while data is missing: run `strongroom check`, then `strongroom repair index` or `strongroom repair snapshots`",
            lost.len(),
            kind_name(lost[0].1),
            lost[0].0
        );
    }
    for v in copies.values_mut() {
        v.sort_by_key(|(pack, _)| (std::cmp::Reverse(referenced_bytes[pack]), *pack));
        let (pack, entry) = v[0];
        chosen.entry(pack).or_default().push(entry);
        if all_copies[&(entry.id, entry.kind)] > 1 {
            duplicated.push((pack, entry));
        }
    }

    let mut out: BTreeMap<Id, PackPlan> = BTreeMap::new();
    let mut used_bytes = 0u64;
    for (pack, c) in packs {
        let mine = chosen.remove(&pack).unwrap_or_default();
        let used: u64 = mine.iter().map(|e| e.length as u64).sum();
        let all: u64 = c.entries.iter().map(|e| e.length as u64).sum();
        used_bytes += used;
        let fate = if mine.is_empty() {
            Fate::Delete
        } else {
            // Repack or keep, decided below.
            Fate::Keep
        };
        out.insert(
            pack,
            PackPlan {
                size: c.size,
                fate,
                indexed: c.indexed,
                entries: c.entries.len(),
                unused_bytes: all - used,
                chosen: mine,
            },
        );
    }

    // Repack the packs most wasteful first, until the unused space left
    // is within the limit.
    let limit = input.max_unused.limit(used_bytes);
    let mut unused: u64 = out
        .values()
        .filter(|p| p.fate == Fate::Keep)
        .map(|p| p.unused_bytes)
        .sum();
    let mut partial: Vec<(&Id, &PackPlan)> = out
        .iter()
        .filter(|(_, p)| p.fate == Fate::Keep && p.unused_bytes > 0)
        .collect();
    partial.sort_by(|a, b| {
        let ra = a.1.unused_bytes as f64 / a.1.size.max(1) as f64;
        let rb = b.1.unused_bytes as f64 / b.1.size.max(1) as f64;
        rb.total_cmp(&ra).then(a.0.cmp(b.0))
    });
    let mut repack = Vec::new();
    for (id, p) in partial {
        if unused <= limit {
            break;
        }
        unused -= p.unused_bytes;
        repack.push(*id);
    }
    for id in repack {
        out.get_mut(&id).expect("planned above").fate = Fate::Repack;
    }

    let going = |pack: &Id| missing.contains(pack) || out.get(pack).is_some_and(|p| p.fate != Fate::Keep);
    let rewrite = input
        .files
        .iter()
        .filter(|f| f.packs.iter().any(|p| going(&p.pack)))
        .map(|f| f.name.clone())
        .collect();
    // The copy chosen of a blob with several copies (any of them forged,
    // perhaps, and the forgery the one chosen): it must be sound before the
    // others can go, and before a repack depends on it.
    let mut verify = duplicated;
    verify.sort_by_key(|(pack, e)| (*pack, e.offset));
    Ok(Plan {
        packs: out,
        missing,
        damaged,
        rewrite,
        verify,
        used_bytes,
        unused_after: unused,
    })
}

pub fn kind_name(kind: BlobKind) -> &'static str {
    match kind {
        BlobKind::Data => "data",
        BlobKind::Tree => "tree",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RunId;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn blob(n: u8, offset: u32, length: u32) -> BlobEntry {
        BlobEntry {
            id: id(n),
            kind: BlobKind::Data,
            run: RunId([1; 16]),
            offset,
            length,
            raw_length: length,
        }
    }

    fn pack(n: u8, blobs: Vec<BlobEntry>) -> PackEntries {
        let size = blobs
            .iter()
            .map(|b| (b.offset + b.length) as u64)
            .max()
            .unwrap_or(0)
            + 100;
        PackEntries {
            pack: id(100 + n),
            size,
            blobs,
        }
    }

    fn plan(files: Vec<Vec<PackEntries>>, used: &[u8], max: MaxUnused) -> Result<Plan> {
        let files: Vec<IndexFileIn> = files
            .into_iter()
            .enumerate()
            .map(|(i, packs)| IndexFileIn {
                name: format!("f{i}"),
                packs,
            })
            .collect();
        let listed = files
            .iter()
            .flat_map(|f| f.packs.iter().map(|p| (p.pack, p.size)))
            .collect();
        let used = used.iter().map(|n| (id(*n), BlobKind::Data)).collect();
        make(&Input {
            files: &files,
            unindexed: &[],
            listed: &listed,
            used: &used,
            excluded: &HashSet::new(),
            max_unused: max,
        })
    }

    #[test]
    fn whole_packs_are_kept_or_deleted() {
        let p = plan(
            vec![
                vec![pack(1, vec![blob(1, 0, 10), blob(2, 10, 10)])],
                vec![pack(2, vec![blob(3, 0, 10)])],
            ],
            &[1, 2],
            MaxUnused::Percent(5.0),
        )
        .unwrap();
        assert_eq!(p.packs[&id(101)].fate, Fate::Keep);
        assert_eq!(p.packs[&id(102)].fate, Fate::Delete);
        assert_eq!(p.rewrite, BTreeSet::from(["f1".to_string()]));
        assert!(p.verify.is_empty());
    }

    #[test]
    fn partly_used_packs_are_repacked_only_past_the_limit() {
        let files = || {
            vec![vec![
                pack(1, vec![blob(1, 0, 90), blob(2, 90, 10)]),
                pack(2, vec![blob(3, 0, 50), blob(4, 50, 50)]),
            ]]
        };
        // 140 used, 60 unused: 5 % tolerates 7 bytes, so both go.
        let p = plan(files(), &[1, 3], MaxUnused::Percent(5.0)).unwrap();
        assert_eq!(p.count(Fate::Repack), 2);
        assert_eq!(p.unused_after, 0);
        // 20 % tolerates 35: the most wasteful (pack 2, half unused) goes.
        let p = plan(files(), &[1, 3], MaxUnused::Percent(20.0)).unwrap();
        assert_eq!(p.packs[&id(102)].fate, Fate::Repack);
        assert_eq!(p.packs[&id(101)].fate, Fate::Keep);
        assert_eq!(p.unused_after, 10);
        // 40 % tolerates 93: nothing.
        let p = plan(files(), &[1, 3], MaxUnused::Percent(40.0)).unwrap();
        assert_eq!(p.count(Fate::Repack), 0);
        let p = plan(files(), &[1, 3], MaxUnused::Unlimited).unwrap();
        assert_eq!(p.count(Fate::Repack), 0);
    }

    #[test]
    fn a_duplicate_kept_where_it_stays_is_verified_first() {
        let p = plan(
            vec![vec![
                pack(1, vec![blob(1, 0, 10), blob(2, 10, 10)]),
                pack(2, vec![blob(1, 0, 10)]),
            ]],
            &[1, 2],
            MaxUnused::Percent(5.0),
        )
        .unwrap();
        assert_eq!(p.packs[&id(101)].fate, Fate::Keep);
        assert_eq!(p.packs[&id(102)].fate, Fate::Delete);
        assert_eq!(p.verify, vec![(id(101), blob(1, 0, 10))]);
    }

    #[test]
    fn a_missing_referenced_blob_stops_everything() {
        let e = plan(
            vec![vec![pack(1, vec![blob(1, 0, 10)])]],
            &[1, 9],
            MaxUnused::Unlimited,
        )
        .err()
        .unwrap();
        assert!(format!("{e}").contains("prune deletes nothing"), "{e}");
    }

    #[test]
    fn limits_parse() {
        assert_eq!(MaxUnused::parse("5%"), Some(MaxUnused::Percent(5.0)));
        assert_eq!(MaxUnused::parse("0"), Some(MaxUnused::Percent(0.0)));
        assert_eq!(MaxUnused::parse("100%"), Some(MaxUnused::Unlimited));
        assert_eq!(MaxUnused::parse("unlimited"), Some(MaxUnused::Unlimited));
        assert_eq!(MaxUnused::parse("-1%"), None);
        assert_eq!(MaxUnused::parse("5x"), None);
    }
}
