//! The conformance suite every backend passes: the local and in-memory
//! ones in this crate's unit tests, S3 (a real Garage) and the HTTPS
//! server in `tests/backends.rs`. It panics on the first difference.
//!
//! Objects are named as a repository names them, by the SHA-256 of their
//! bytes (the strongroom server refuses anything else); only `config` has
//! a name of its own and is replaced.

use super::*;

/// An object's name: the hex SHA-256 of its bytes.
pub fn name_of(data: &[u8]) -> String {
    hex::encode(crate::crypto::sha256(data))
}

/// Runs the whole suite on an empty backend.
pub fn run(b: &dyn Backend) {
    basics(b);
    large_objects_and_ranges(b);
    concurrent_writers(b);
}

/// Creating, replacing, reading, ranges, listing, deleting.
pub fn basics(b: &dyn Backend) {
    b.create().unwrap();
    assert!(is_not_found(&b.read(Kind::Config, "config").unwrap_err()));
    assert!(is_not_found(
        &b.stat(Kind::Snapshots, &"ab".repeat(32)).unwrap_err()
    ));
    assert!(is_not_found(
        &b.read_range(Kind::Packs, &"cd".repeat(32), 0, 10).unwrap_err()
    ));
    b.write(Kind::Config, "config", b"one").unwrap();
    assert!(b.create().is_err(), "creating where a repository is must fail");
    b.write(Kind::Config, "config", b"two").unwrap();
    assert_eq!(b.read(Kind::Config, "config").unwrap(), b"two");
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let name = name_of(&data);
    b.write(Kind::Packs, &name, &data).unwrap();
    assert_eq!(b.read(Kind::Packs, &name).unwrap(), data);
    assert_eq!(
        b.read_range(Kind::Packs, &name, 100, 50).unwrap(),
        &data[100..150]
    );
    assert_eq!(b.read_range(Kind::Packs, &name, 0, 1).unwrap(), &data[..1]);
    // Past the end: what there is, then nothing.
    assert_eq!(
        b.read_range(Kind::Packs, &name, 9_990, 50).unwrap(),
        &data[9_990..]
    );
    assert_eq!(b.read_range(Kind::Packs, &name, 10_000, 50).unwrap(), b"");
    assert_eq!(b.read_range(Kind::Packs, &name, 20_000, 50).unwrap(), b"");
    assert_eq!(b.read_range(Kind::Packs, &name, 5, 0).unwrap(), b"");
    assert_eq!(b.stat(Kind::Packs, &name).unwrap(), 10_000);
    // Created only where nothing is: the second finds the first.
    let only = name_of(b"only once");
    assert!(b.write_new(Kind::Keys, &only, b"only once").unwrap());
    assert!(!b.write_new(Kind::Keys, &only, b"something else").unwrap());
    assert_eq!(b.read(Kind::Keys, &only).unwrap(), b"only once");
    b.delete(Kind::Keys, &only).unwrap();
    // Writing the same object again changes nothing.
    b.write(Kind::Packs, &name, &data).unwrap();
    assert_eq!(b.read(Kind::Packs, &name).unwrap(), data);
    let (s1, s2) = (name_of(b"x"), name_of(b"yy"));
    b.write(Kind::Snapshots, &s1, b"x").unwrap();
    b.write(Kind::Snapshots, &s2, b"yy").unwrap();
    let mut l = b.list(Kind::Snapshots).unwrap();
    l.sort_by(|a, b| a.name.cmp(&b.name));
    let listed = |name: &str, size| Listed {
        name: name.into(),
        size,
    };
    let mut want = vec![listed(&s1, 1), listed(&s2, 2)];
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(l, want);
    assert_eq!(b.list(Kind::Packs).unwrap(), vec![listed(&name, 10_000)]);
    // An empty object is an object.
    let empty = name_of(b"");
    b.write(Kind::Locks, &empty, b"").unwrap();
    assert_eq!(b.read(Kind::Locks, &empty).unwrap(), b"");
    assert_eq!(b.stat(Kind::Locks, &empty).unwrap(), 0);
    assert_eq!(b.list(Kind::Locks).unwrap(), vec![listed(&empty, 0)]);
    b.delete(Kind::Locks, &empty).unwrap();
    b.delete(Kind::Snapshots, &s1).unwrap();
    b.delete(Kind::Snapshots, &s1).unwrap();
    assert!(is_not_found(&b.read(Kind::Snapshots, &s1).unwrap_err()));
    assert_eq!(b.list(Kind::Snapshots).unwrap().len(), 1);
    b.remove_stale_temporaries(&crate::hostname());
    b.remove_own_temporaries();
    assert_eq!(b.read(Kind::Snapshots, &s2).unwrap(), b"yy");
    assert!(b.list(Kind::Index).unwrap().is_empty());
    assert!(b.list(Kind::Locks).unwrap().is_empty());
}

/// Bytes that differ at every offset, from `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A pack of 24 MiB, whole and in ranges across it.
pub fn large_objects_and_ranges(b: &dyn Backend) {
    let data = pattern(24 << 20, 7);
    let name = name_of(&data);
    b.write(Kind::Packs, &name, &data).unwrap();
    assert_eq!(b.stat(Kind::Packs, &name).unwrap(), data.len() as u64);
    assert!(
        b.read(Kind::Packs, &name).unwrap() == data,
        "a large object reads back"
    );
    for (offset, length) in [(0, 16 << 20), ((8 << 20) + 3, 5 << 20), ((24 << 20) - 7, 1 << 20)] {
        let got = b
            .read_range(Kind::Packs, &name, offset as u64, length as u64)
            .unwrap();
        let want = &data[offset..(offset + length).min(data.len())];
        assert!(got == want, "range {offset}+{length}");
    }
    b.delete(Kind::Packs, &name).unwrap();
}

/// Threads writing at once, one object each of several thousand: all
/// listed (across pages where the store pages), all readable.
pub fn concurrent_writers(b: &dyn Backend) {
    const THREADS: usize = 8;
    const EACH: usize = 300;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in 0..EACH {
                    let data = format!("{:064x}", t * EACH + i);
                    b.write(Kind::Index, &name_of(data.as_bytes()), data.as_bytes())
                        .unwrap();
                }
            });
        }
    });
    let mut listed = b.list(Kind::Index).unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want: Vec<(String, String)> = (0..THREADS * EACH)
        .map(|i| {
            let data = format!("{i:064x}");
            (name_of(data.as_bytes()), data)
        })
        .collect();
    want.sort();
    assert_eq!(listed.len(), want.len());
    for (l, (name, _)) in listed.iter().zip(&want) {
        assert_eq!(&l.name, name);
        assert_eq!(l.size, 64);
    }
    assert_eq!(
        b.read(Kind::Index, &want[1234].0).unwrap(),
        want[1234].1.as_bytes()
    );
}
