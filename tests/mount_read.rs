//! `strongroom mount`: how file data is read from the packs: a sequential
//! reader has the following blobs loaded ahead, neighbours of one pack in
//! one ranged read; a random reader gets only what it reads.

mod util;

use std::os::unix::fs::FileExt;

use util::fuse::{ls, mount};
use util::{Env, sh, under};

/// The first two numbers of the line starting `start` that the daemon,
/// run with `-v`, told at exit.
fn told(stderr: &str, start: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no {start:?} in:\n{stderr}"));
    let n: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

/// What a mount did: blobs opened and pack reads (these depend on who got
/// to a blob first, the read-ahead or the reader needing it), and what
/// the read-ahead decided to load, blobs and groups of one ranged read
/// each (that depends only on the order of the reads).
#[derive(Debug, Clone, Copy)]
struct Counts {
    blobs: u64,
    reads: u64,
    ahead_blobs: u64,
    ahead_groups: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            blobs: self.blobs - o.blobs,
            reads: self.reads - o.reads,
            ahead_blobs: self.ahead_blobs - o.ahead_blobs,
            ahead_groups: self.ahead_groups - o.ahead_groups,
        }
    }
}

fn counts(stderr: &str) -> Counts {
    let (blobs, reads) = told(stderr, "opened ");
    let (ahead_blobs, ahead_groups) = told(stderr, "read ahead ");
    Counts {
        blobs,
        reads,
        ahead_blobs,
        ahead_groups,
    }
}

/// A repository holding `src/big`, 32 MiB of random bytes (about 32 blobs).
fn big_file(env: &Env) -> std::path::PathBuf {
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    util::random_file(&src.join("big"), 32 << 20, 5);
    env.backup(&[&src]);
    src
}

/// Mounts the latest snapshot with `-v` (and no disk cache: every mount
/// reads the packs), runs `read` on the mounted copy of `src`, unmounts;
/// what the daemon opened and read, trees included.
fn mounted_counts(env: &Env, src: &std::path::Path, read: impl FnOnce(&std::path::Path)) -> Counts {
    let at = env.path("mnt");
    let mut m = mount(env, &at, &["-v", "--snapshot", "latest", "--no-disk-cache"]);
    let dir = under(&at, src);
    assert_eq!(ls(&dir), ["big"]);
    read(&dir);
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    counts(&stderr)
}

#[test]
fn a_sequential_read_loads_neighbouring_blobs_together_and_reads_identical() {
    let env = Env::new();
    let src = big_file(&env);
    // The trees alone, to tell them from the file's blobs.
    let trees = mounted_counts(&env, &src, |_| {});
    let c = mounted_counts(&env, &src, |dir| {
        sh(&format!(
            "cmp {} {}",
            src.join("big").display(),
            dir.join("big").display()
        ));
    }) - trees;
    eprintln!("{c:?}");
    // Chunks are 0.5 to 8 MiB.
    assert!((4..=64).contains(&c.blobs), "{c:?}");
    // All were decided ahead (the file's first read loads its directory,
    // the file itself), in few ranged reads: three decisions (its
    // directory, its first window, the rest), each split by the two or
    // three packs the file lies in (a backup's threads fill them in
    // turn). How many a reader got to first, each then its own read,
    // depends on the machine's load.
    assert!(c.ahead_blobs + 1 >= c.blobs, "{c:?}");
    assert!(c.ahead_groups * 2 <= c.ahead_blobs, "{c:?}");
    assert!(c.reads <= c.blobs, "{c:?}");
}

#[test]
fn random_reads_load_only_the_blobs_they_read() {
    let env = Env::new();
    let src = big_file(&env);
    let want = std::fs::read(src.join("big")).unwrap();
    let trees = mounted_counts(&env, &src, |_| {});
    let c = mounted_counts(&env, &src, |dir| {
        let f = std::fs::File::open(dir.join("big")).unwrap();
        // Far apart and backwards: never sequential.
        for at in [20u64 << 20, 9 << 20, 30 << 20] {
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, at).unwrap();
            assert_eq!(buf, want[at as usize..at as usize + 4096]);
        }
    }) - trees;
    assert_eq!((c.blobs, c.reads, c.ahead_blobs), (3, 3, 0), "{c:?}");
}

#[test]
fn listing_and_copying_a_directory_loads_its_subtrees_and_small_files_together() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // 40 subdirectories, each a distinct tree; 100 small files, each its
    // own blob.
    for i in 0..40 {
        let d = src.join(format!("tree/d{i:02}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("e{i}")), b"").unwrap();
    }
    std::fs::create_dir_all(src.join("flat")).unwrap();
    for i in 0..100 {
        util::random_file(&src.join(format!("flat/f{i:03}")), 2048, 1000 + 2 * i);
    }
    env.backup(&[&src]);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &["-v", "--snapshot", "latest"]);
    let out = env.path("out");
    sh(&format!("cp -a {} {}", under(&at, &src).display(), out.display()));
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    sh(&format!("diff -r {} {}", src.display(), out.display()));
    let c = counts(&stderr);
    eprintln!("{c:?}");
    assert!(c.blobs >= 140, "{c:?}");
    // Without read-ahead, one ranged read per blob. With it, the 40
    // subtrees and all but the first few files are decided ahead, a few
    // groups of neighbours each (how many a reader got to first, each
    // then its own read, depends on the machine's load).
    assert!(c.ahead_blobs >= 130, "{c:?}");
    assert!(c.ahead_groups * 5 <= c.ahead_blobs, "{c:?}");
    assert!(c.reads <= c.blobs, "{c:?}");
}
