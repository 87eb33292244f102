//! The files of the cache directory, behind their authentication (another
//! local user may write them; these are the decoders a forged MAC would
//! reach): the index table, the rollback record, the record of locks seen,
//! the files cache, a run-keys entry.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strongroom::cache::Cache;
use strongroom::crypto::SecretKey;
use strongroom::crypto::subkeys::Subkeys;
use strongroom::format::{Id, RunId};
use strongroom::fs::filescache::FilesCache;
use strongroom::repository::sorted_index::SortedIndex;
use strongroom::repository::{lock, rollback, runkeys};

struct Fixture {
    dir: tempfile::TempDir,
    cache: Cache,
    subkeys: Subkeys,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(&dir.path().join("cache")));
        Fixture {
            dir,
            cache,
            subkeys: Subkeys::derive(&SecretKey([9; 32])),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let repo = Id([1; 32]);
    let key = &f.subkeys.cache;

    let table = f.dir.path().join("table");
    std::fs::write(&table, SortedIndex::authenticate(data.to_vec(), key, "t")).unwrap();
    if let Ok(t) = SortedIndex::open(&std::fs::File::open(&table).unwrap(), key, "t") {
        let _ = t.iter().count();
        let _ = t.pack_sizes().count();
        let _ = t.get_all(&Id([0; 32]));
    }

    let _ = rollback::is_valid_record(data);
    f.cache.put_authenticated(&repo, lock::FIRST_SEEN, key, data);
    let _ = lock::first_seen(&f.cache, &f.subkeys, &repo);
    f.cache.put(&repo, "raw", data);
    let _ = f.cache.get_authenticated(&repo, "raw", key);
    if let Some(files) = FilesCache::from_bytes(data.to_vec()) {
        for path in [&b"/"[..], b"/etc/hostname", b""] {
            let _ = files.get(path);
        }
    }
    let _ = runkeys::parse_cached(RunId([2; 16]), data);
});
