//! Writes the fuzz targets' seeds from a real repository: every stored
//! object as it is, and every sealed one as it comes out of its seal.
//!
//!   cargo run --example fuzz_seeds -- REPO FULL_KEY_FILE CACHE_DIR OUT_DIR
//!
//! `fuzz/seeds.sh` makes the repository and runs this.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use strongroom::backend::{Backend, Kind};
use strongroom::cache::Cache;
use strongroom::format::lock::Lock;
use strongroom::format::pack::{PackHeader, TRAILER_LEN, parse_trailer};
use strongroom::format::tree::Extent;
use strongroom::format::{FORMAT_VERSION, Id, Timestamp, encode};
use strongroom::fs::filescache::{CachedFile, NewFilesCache};
use strongroom::repository::reader::Reader;
use strongroom::repository::{Repository, index, packs, snapshots};

fn put(out: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes).with_context(|| format!("writing seed {target}/{name}"))
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [repo_dir, key_file, cache_dir, out] = &args[..] else {
        anyhow::bail!("usage: fuzz_seeds REPO FULL_KEY_FILE CACHE_DIR OUT_DIR");
    };
    let key = strongroom::keys::load(key_file, &Default::default())?.into_full("write seeds")?;
    let backend: Arc<dyn Backend> = Arc::new(strongroom::backend::local::Local::new(repo_dir));
    let repo = Repository::open(backend.clone(), &key.shared)?;
    let cache = Cache::open(Some(cache_dir));
    let subkeys = &key.shared.subkeys;

    put(out, "config", "config", &backend.read(Kind::Config, "config")?)?;
    for (kind, target) in [(Kind::Keys, "envelope"), (Kind::Snapshots, "manifest")] {
        for l in backend.list(kind)? {
            put(out, target, &l.name, &backend.read(kind, &l.name)?)?;
        }
    }
    for l in backend.list(Kind::Index)? {
        let f = index::read_index_file(backend.as_ref(), subkeys, &repo.id(), &l.name)?;
        put(out, "index_file", &l.name, &encode(&f))?;
    }
    for l in backend.list(Kind::Packs)? {
        let pack = Id::from_hex(&l.name).context("a pack name")?;
        let (bytes, entries) = packs::read_verified(backend.as_ref(), subkeys, &repo.id(), &pack)?;
        let hlen = parse_trailer(&bytes[bytes.len() - TRAILER_LEN..])?;
        let header = PackHeader {
            format: FORMAT_VERSION,
            body_sha256: strongroom::crypto::sha256(&bytes[..bytes.len() - TRAILER_LEN - hlen]),
            blobs: entries.blobs,
        };
        put(out, "pack_header", &l.name, &encode(&header))?;
    }
    let listing = snapshots::list(&repo, &key.shared)?;
    let reader = Reader::open(&repo, &key, &cache)?;
    for s in &listing.snapshots {
        let name = s.id.to_hex();
        put(out, "catalog", &name, &encode(&s.catalog))?;
        let mut stack = vec![s.catalog.tree];
        let mut n = 0;
        while let Some(t) = stack.pop().filter(|_| n < 20) {
            let tree = reader.read_tree(&t)?;
            stack.extend(tree.nodes.iter().filter_map(|n| n.subtree));
            put(out, "tree", &t.to_hex(), &encode(&tree))?;
            n += 1;
        }
    }
    let now = Timestamp::now();
    let lock = Lock {
        format: FORMAT_VERSION,
        host: "seed-host".into(),
        pid: 4242,
        exclusive: true,
        purpose: "prune".into(),
        created: now,
        refreshed: now,
    };
    put(out, "lock", "exclusive", &encode(&lock))?;
    put(out, "key_file", "full.key", &std::fs::read(key_file)?)?;
    // The cache directory's files, without their trailing MAC (the target
    // authenticates what it is given).
    let repo_cache = cache_dir.join(repo.id().to_hex());
    for (sub, name) in [
        ("index-table", None),
        ("", Some("seen")),
        ("", Some("locks-first-seen")),
    ] {
        let dir = repo_cache.join(sub);
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if name.is_some_and(|n| n != file) || e.path().is_dir() || file.ends_with(".names") {
                continue;
            }
            let bytes = std::fs::read(e.path())?;
            let body = &bytes[..bytes.len().saturating_sub(32)];
            put(
                out,
                "cache_files",
                &format!("{}{file}", sub.replace('/', "-")),
                body,
            )?;
        }
    }
    // A files cache's plaintext: a file of data and a hole, with xattrs.
    let mut files = NewFilesCache::default();
    let t = |sec| Timestamp { sec, nsec: 5 };
    files.push(
        b"/etc/hostname",
        &CachedFile {
            size: 4096 + 9,
            mtime: t(1_700_000_000),
            ctime: t(1_700_000_001),
            inode: 1234,
            content: vec![
                Extent::Hole { len: 4096 },
                Extent::Data {
                    id: Id([7; 32]),
                    len: 9,
                },
            ],
            xattrs: vec![(b"user.note".to_vec(), b"seed".to_vec())],
        },
    );
    put(out, "cache_files", "files-cache", files.encoded())?;
    Ok(())
}
