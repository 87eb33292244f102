//! `strongroom mount`: the disk cache of sealed blobs in the cache
//! directory: a remount reads from it without the packs, it holds no
//! plaintext, a damaged or planted entry is replaced from the repository,
//! it stays within `--cache-size`, and `--no-disk-cache` keeps nothing.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use util::fuse::{Mounted, mount};
use util::{Env, files_under, sh, under};

/// A repository holding `src/big` (`size` random bytes) and a small text
/// file; returns the source directory.
fn repository(env: &Env, size: usize) -> PathBuf {
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    util::random_file(&src.join("big"), size, 23);
    std::fs::write(src.join("small"), "small text\n").unwrap();
    env.backup(&[&src]);
    src
}

/// The files of the disk cache (every repository's `blobs/`), by path.
fn blob_files(env: &Env) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(&env.path("cache"))
        .into_iter()
        .filter(|p| p.parent().unwrap().file_name().unwrap() == "blobs")
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Mounts the latest snapshot with `-v` and the disk cache, which a
/// repository in a local directory uses only when asked.
fn mount_latest(env: &Env, extra: &[&str]) -> Mounted {
    let mut args = vec!["-v", "--snapshot", "latest", "--disk-cache"];
    args.extend_from_slice(extra);
    mount(env, &env.path("mnt"), &args)
}

/// Copies `name` out of the mount with `cp` and compares it with the
/// source.
fn cp_and_compare(env: &Env, src: &Path, name: &str) {
    let through = under(&env.path("mnt"), src).join(name);
    let out = env.path("copy");
    sh(&format!(
        "cp {} {o} && cmp {o} {} && rm {o}",
        through.display(),
        src.join(name).display(),
        o = out.display()
    ));
}

/// Unmounts with SIGTERM; (pack reads, disk cache entries opened) the
/// daemon told at exit.
fn stop(mut m: Mounted) -> (u64, u64) {
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("opened "))
        .unwrap_or_else(|| panic!("no counts in:\n{stderr}"));
    let n: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    // (A daemon without a disk cache tells no third figure.)
    (n[1], n.get(2).copied().unwrap_or(0))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_remount_reads_a_file_from_the_disk_cache_with_every_pack_destroyed() {
    let env = Env::new();
    let src = repository(&env, 8 << 20);
    let m = mount_latest(&env, &[]);
    cp_and_compare(&env, &src, "big");
    let (reads, _) = stop(m);
    assert!(reads > 0);
    assert!(!blob_files(&env).is_empty(), "no blob kept on disk");
    // Every pack is now garbage of the same size.
    for (i, pack) in env.repo_objects("packs").iter().enumerate() {
        let len = std::fs::metadata(pack).unwrap().len() as usize;
        util::random_file(pack, len, 1000 + i as u64);
    }
    let m = mount_latest(&env, &[]);
    cp_and_compare(&env, &src, "big");
    let (reads, hits) = stop(m);
    assert_eq!(reads, 0, "the packs were read");
    assert!(hits >= 2, "{hits} blobs from the disk cache");
}

#[test]
fn the_disk_cache_holds_no_plaintext() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // A recognisable text (compressed when stored) and random bytes
    // (stored as they are).
    let marker = "STRONGROOM-PLAINTEXT-MARKER-7f3a9c";
    let text: String = (0..50_000).map(|i| format!("{marker} line {i}\n")).collect();
    std::fs::write(src.join("pattern.txt"), &text).unwrap();
    util::random_file(&src.join("big"), 4 << 20, 31);
    env.backup(&[&src]);
    let m = mount_latest(&env, &[]);
    cp_and_compare(&env, &src, "pattern.txt");
    cp_and_compare(&env, &src, "big");
    stop(m);
    let files = blob_files(&env);
    assert!(files.len() >= 2, "{} blobs kept on disk", files.len());
    let cache = env.path("cache");
    sh(&format!("! grep -r -q -a {marker} {}", cache.display()));
    sh(&format!("! grep -r -q -a 'line 4999' {}", cache.display()));
    let big = std::fs::read(src.join("big")).unwrap();
    for (path, bytes) in &files {
        for at in (0..big.len()).step_by(512 << 10) {
            assert!(
                !contains(bytes, &big[at..at + 64]),
                "{} holds bytes of the file at {at}",
                path.display()
            );
        }
    }
}

#[test]
fn damaged_and_planted_disk_cache_entries_are_replaced_from_the_repository() {
    let env = Env::new();
    let src = repository(&env, 8 << 20);
    let m = mount_latest(&env, &[]);
    cp_and_compare(&env, &src, "big");
    stop(m);
    let kept = blob_files(&env);
    assert!(kept.len() >= 2, "{} blobs kept on disk", kept.len());
    for (path, bytes) in &kept {
        util::flip_byte(path, bytes.len() as u64 / 2);
    }
    // One entry is swapped for another's bytes (right name, wrong blob),
    // and files that are not entries are planted beside them.
    let mut paths = kept.keys();
    let (first, second) = (paths.next().unwrap(), paths.next().unwrap());
    std::fs::copy(second, first).unwrap();
    let dir = first.parent().unwrap();
    let outside = env.path("outside");
    std::fs::write(&outside, "not the cache's\n").unwrap();
    std::os::unix::fs::symlink(
        &outside,
        dir.join(format!("{}-{}", "a".repeat(64), "b".repeat(64))),
    )
    .unwrap();
    std::fs::write(dir.join("stray"), "stray\n").unwrap();

    let m = mount_latest(&env, &[]);
    cp_and_compare(&env, &src, "big");
    let (reads, hits) = stop(m);
    assert!(reads > 0);
    assert_eq!(hits, 0, "a damaged entry was used");
    // Each entry was read again from the packs and stored anew; what was
    // planted is gone, and what the symlink pointed to is untouched.
    assert_eq!(blob_files(&env), kept);
    assert!(!dir.join("stray").exists());
    assert_eq!(std::fs::read(&outside).unwrap(), b"not the cache's\n");
}

#[test]
fn the_disk_cache_stays_within_cache_size() {
    let env = Env::new();
    let src = repository(&env, 32 << 20);
    let m = mount_latest(&env, &["--cache-size", "4M"]);
    cp_and_compare(&env, &src, "big");
    stop(m);
    let files = blob_files(&env);
    let total: usize = files.values().map(Vec::len).sum();
    assert!(!files.is_empty(), "no blob kept on disk");
    assert!(total <= 4 << 20, "{total} bytes in {} blobs", files.len());
}

#[test]
fn a_local_repository_or_no_disk_cache_keeps_no_blob_files_where_disk_cache_does() {
    let env = Env::new();
    let src = repository(&env, 4 << 20);
    // A local repository keeps none unless asked.
    let m = mount(&env, &env.path("mnt"), &["-v", "--snapshot", "latest"]);
    cp_and_compare(&env, &src, "big");
    let (_, hits) = stop(m);
    assert_eq!(hits, 0);
    assert!(blob_files(&env).is_empty(), "blobs kept of a local repository");
    let m = mount(
        &env,
        &env.path("mnt"),
        &["-v", "--snapshot", "latest", "--no-disk-cache"],
    );
    cp_and_compare(&env, &src, "big");
    let (_, hits) = stop(m);
    assert_eq!(hits, 0);
    assert!(blob_files(&env).is_empty(), "blobs kept with --no-disk-cache");
    let m = mount_latest(&env, &[]);
    cp_and_compare(&env, &src, "big");
    stop(m);
    assert!(!blob_files(&env).is_empty(), "no blob kept on disk");
    // Kept blobs are not read either with --no-disk-cache.
    let m = mount(
        &env,
        &env.path("mnt"),
        &["-v", "--snapshot", "latest", "--no-disk-cache"],
    );
    cp_and_compare(&env, &src, "big");
    let (reads, hits) = stop(m);
    assert!(reads > 0);
    assert_eq!(hits, 0);
}
