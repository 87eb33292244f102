//! Inode numbers: fixed small numbers for the virtual directories, hashes
//! for what lies inside a snapshot, so a remount gives the same numbers.
//!
//! An entry of a snapshot tree is numbered by a hash of (snapshot id,
//! parent's number, name); a file with several hard links by a hash of
//! (snapshot id, device, inode), so its links share one number. Hashed
//! numbers have the top bit set and virtual ones never do, so the two
//! never meet. Two hashed identities meeting on one number (about once in
//! 2^63) are told apart by rehashing the later one with a counter.
//! Entries of snapshot trees leave the table when the kernel forgets
//! them, so memory follows what the kernel holds, not what was visited.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::Entry;
use crate::format::Id;

/// The mount point's own directory.
pub const ROOT: u64 = 1;
const HASHED: u64 = 1 << 63;
const SHARDS: usize = 64;

/// What an inode number stands for, before hashing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Identity(pub [u8; 32]);

impl Identity {
    /// An entry reached by its name in a directory.
    pub fn named(snapshot: &Id, parent_key: u64, name: &[u8]) -> Identity {
        Identity(digest(&[b"named", &snapshot.0, &parent_key.to_le_bytes(), name]))
    }

    /// A file with several hard links, by the device and inode it had.
    pub fn linked(snapshot: &Id, dev: u64, inode: u64) -> Identity {
        Identity(digest(&[
            b"linked",
            &snapshot.0,
            &dev.to_le_bytes(),
            &inode.to_le_bytes(),
        ]))
    }

    /// The half of the digest the number is not taken from, kept to tell
    /// two identities on one number apart (never all zero: that is no
    /// identity).
    pub fn tag(&self) -> [u8; 16] {
        let mut t: [u8; 16] = self.0[16..].try_into().expect("16 of 32 bytes");
        t[15] |= 1;
        t
    }

    /// A snapshot's root directory seen under one view (`snapshots/`,
    /// `ids/`): the key its children are numbered under.
    pub fn root_key(snapshot: &Id, view: &str) -> u64 {
        number(&digest(&[b"root", &snapshot.0, view.as_bytes()]), 0)
    }
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(&(p.len() as u64).to_le_bytes());
        all.extend_from_slice(p);
    }
    crate::crypto::sha256(&all)
}

/// The number `identity` gets unless another took it first.
pub fn first_number(identity: &Identity) -> u64 {
    number(&identity.0, 0)
}

fn number(digest: &[u8; 32], attempt: u64) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    let n = u64::from_le_bytes(b).wrapping_add(attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    n | HASHED
}

/// Counts one more lookup of `e` (the caller holds its shard's lock, as
/// [`Table::forget`] takes it).
fn looked_up(e: &Entry) {
    if let Entry::Stored(s) = e {
        let n = s.lookups.load(Ordering::Relaxed);
        s.lookups.store(n.saturating_add(1), Ordering::Relaxed);
    }
}

/// Every inode handed to the kernel, in shards so that lookups on
/// different inodes rarely wait for each other.
pub struct Table {
    shards: Vec<RwLock<HashMap<u64, Arc<Entry>>>>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }
}

impl Table {
    fn shard(&self, ino: u64) -> &RwLock<HashMap<u64, Arc<Entry>>> {
        &self.shards[(ino ^ (ino >> 17)) as usize % SHARDS]
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Entry>> {
        self.shard(ino)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .cloned()
    }

    /// Enters a virtual entry under its fixed number.
    pub fn put(&self, ino: u64, entry: Entry) {
        self.shard(ino)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ino, Arc::new(entry));
    }

    /// The number of a snapshot entry of this identity, and its entry: the
    /// one in the table, or one `make` builds for the number chosen. With
    /// `counted` (a lookup the kernel takes) a new entry is entered and one
    /// more lookup counted, under the same lock as [`Table::forget`] takes,
    /// so an entry is never dropped while the kernel holds it; without, a
    /// new entry is not entered (a listing enters what the kernel takes of
    /// it with [`Table::count`]), so the table holds only what the kernel
    /// holds.
    pub fn hashed(
        &self,
        identity: Identity,
        counted: bool,
        make: impl Fn(u64) -> Entry,
    ) -> (u64, Arc<Entry>) {
        let mut attempt = 0;
        loop {
            let ino = number(&identity.0, attempt);
            let mut shard = self.shard(ino).write().unwrap_or_else(|e| e.into_inner());
            let e = match shard.get(&ino) {
                Some(e) if e.tag() == Some(identity.tag()) => e.clone(),
                Some(_) => {
                    attempt += 1;
                    continue;
                }
                None => {
                    let e = Arc::new(make(ino));
                    if counted {
                        shard.insert(ino, e.clone());
                    }
                    e
                }
            };
            if counted {
                looked_up(&e);
            }
            return (ino, e);
        }
    }

    /// Counts one lookup of `entry`, numbered `ino`, handed to the kernel
    /// in a readdirplus reply; entered again if it left the table since it
    /// was listed (its number is then still its own unless another
    /// identity took it meanwhile, which the kernel then finds gone).
    pub fn count(&self, ino: u64, entry: &Arc<Entry>) {
        let mut shard = self.shard(ino).write().unwrap_or_else(|e| e.into_inner());
        let e = match shard.get(&ino) {
            Some(e) if e.tag() == entry.tag() => e.clone(),
            Some(_) => return,
            None => {
                shard.insert(ino, entry.clone());
                entry.clone()
            }
        };
        looked_up(&e);
    }

    /// The kernel forgets `n` lookups of `ino`: an entry of a snapshot tree
    /// it no longer holds leaves the table (the layout's stay).
    pub fn forget(&self, ino: u64, n: u64) {
        let mut shard = self.shard(ino).write().unwrap_or_else(|e| e.into_inner());
        let gone = match shard.get(&ino).map(|e| &**e) {
            Some(Entry::Stored(s)) if s.tag != [0; 16] => {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                let left = s.lookups.load(Ordering::Relaxed).saturating_sub(n);
                s.lookups.store(left, Ordering::Relaxed);
                left == 0
            }
            _ => false,
        };
        if gone {
            shard.remove(&ino);
        }
    }
}
