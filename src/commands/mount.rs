//! `strongroom mount MOUNTPOINT`: glue from the command line to the mount.

use anyhow::Result;

use crate::cli::MountArgs;
use crate::error::Exit;
use crate::mount::{MountFs, Options, daemon};
use crate::repository::reader::Reader;

use super::Ctx;

/// `256M`, `1G`, `4096`: bytes, with an optional binary K/M/G/T suffix.
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => {
                    return Err(Exit::usage(format!(
                        "--cache-size {s:?}: use a number with K, M, G or T"
                    )));
                }
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| Exit::usage(format!("--cache-size {s:?}: use a number with K, M, G or T")))
}

pub fn run(ctx: &Ctx, a: MountArgs) -> Result<()> {
    // Blobs of about 1 MiB are allocated and freed by many threads; glibc's
    // default of an arena per thread keeps tens of MB of them resident
    // (one arena: 250 MB peak instead of 306 MB copying a 1 GiB file, no
    // slower).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let key = ctx.load_key()?.into_full("browse snapshots")?;
    let options = Options {
        cache_size: parse_size(&a.cache_size)?,
        allow_other: a.allow_other,
    };
    daemon::clean_dead_mount(&a.mountpoint)?;
    // A read of a remote repository that cannot be served fails with EIO
    // within half a minute instead of blocking the program reading.
    crate::backend::set_interactive();
    let backend = ctx.backend(&key.shared)?;
    let cache = ctx.cache();
    let mut avoid = vec![(std::path::PathBuf::from(backend.location()), "repository")];
    if let Some(dir) = cache.path() {
        avoid.push((dir, "cache directory"));
    }
    let mountpoint = daemon::check_mountpoint(&a.mountpoint, &avoid)?;
    let repo = crate::repository::Repository::open(backend, &key.shared)?;
    // A shared lock for as long as the mount is up: whatever removes data
    // (it takes an exclusive lock) waits until the mount is gone. Without
    // one (a repository this user cannot write, or another process's lock
    // in the way) it still mounts: reading is what a rescue needs.
    let lock = match crate::repository::lock::acquire(&repo, &key.shared.subkeys, &cache, false, "mount") {
        Ok(l) => Some(l),
        Err(e) => {
            crate::warn(&format!(
                "mounting without a lock ({e:#}): data removed meanwhile reads as I/O errors"
            ));
            None
        }
    };
    let listing = ctx.list_snapshots(&repo, &key.shared, &cache)?;
    for (name, err) in &listing.refused {
        crate::warn(&format!("snapshot {name} is left out: {err:#}"));
    }
    let snapshots = match &a.snapshot {
        Some(s) => vec![listing.find(s, a.host.as_deref())?.clone()],
        None => listing
            .snapshots
            .into_iter()
            .filter(|s| a.host.as_ref().is_none_or(|h| s.catalog.host == *h))
            .collect(),
    };
    // The daemon serves until the process ends: what the reader borrows
    // lives as long.
    let repo: &'static _ = Box::leak(Box::new(repo));
    let key: &'static _ = Box::leak(Box::new(key));
    let cache: &'static _ = Box::leak(Box::new(cache));
    let mut reader = Reader::open(repo, key, cache)?;
    // A local repository is read as fast as the cache directory would be:
    // its blobs are cached on disk only when asked.
    if !a.no_disk_cache && (a.disk_cache || !repo.backend.is_local()) {
        reader.use_disk_cache(options.cache_size);
    }
    let what = match &a.snapshot {
        Some(_) => format!("snapshot {}", snapshots[0].id.short()),
        None if snapshots.len() == 1 => "1 snapshot".to_string(),
        None => format!("{} snapshots", snapshots.len()),
    };
    let single = a.snapshot.is_some();
    let fs = MountFs::new(reader, snapshots, &options);
    if single {
        fs.build_single();
    } else {
        fs.build_layout();
    }
    let served = daemon::serve(fs, &mountpoint, &options, &what);
    drop(lock);
    served
}
