//! The files cache: per host and set of backed-up paths, each file's
//! (size, mtime, ctime, inode) with its content, so an unchanged file is not
//! read again, even by a writer key that cannot read the parent snapshot.
//!
//! Sealed under the id key's files-cache subkey. Only an accelerator: a
//! missing or damaged cache costs a re-read, and the blob ids it names are
//! checked against the index before use.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::crypto::SecretKey;
use crate::crypto::aead;
use crate::crypto::subkeys::hmac;
use crate::format::tree::Extent;
use crate::format::{Id, Timestamp, aad, decode_lenient, encode};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedFile {
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub inode: u64,
    pub content: Vec<Extent>,
}

#[derive(Default, Serialize, Deserialize)]
pub struct FilesCache {
    pub entries: HashMap<Vec<u8>, CachedFile>,
}

fn name(subkey: &SecretKey, host: &str, paths: &[Vec<u8>]) -> String {
    let mut m = host.as_bytes().to_vec();
    for p in paths {
        m.push(0);
        m.extend_from_slice(p);
    }
    format!("files/{}", hex::encode(hmac(subkey, &m)))
}

impl FilesCache {
    pub fn load(cache: &Cache, repo: &Id, subkey: &SecretKey, host: &str, paths: &[Vec<u8>]) -> FilesCache {
        let n = name(subkey, host, paths);
        let Some(sealed) = cache.get(repo, &n) else {
            return FilesCache::default();
        };
        let Ok(plain) = aead::open_salted(subkey, &aad("files-cache", repo, n.as_bytes()), &sealed) else {
            crate::warn("the files cache is damaged; every file will be read again");
            return FilesCache::default();
        };
        decode_lenient(&plain, "the files cache").unwrap_or_default()
    }

    pub fn save(&self, cache: &Cache, repo: &Id, subkey: &SecretKey, host: &str, paths: &[Vec<u8>]) {
        let n = name(subkey, host, paths);
        if let Ok(sealed) = aead::seal_salted(subkey, &aad("files-cache", repo, n.as_bytes()), &encode(self))
        {
            cache.put(repo, &n, &sealed);
        }
    }
}
