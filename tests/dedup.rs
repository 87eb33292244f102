//! Deduplication across runs, the files cache, and crash safety.

mod util;

use std::time::{Duration, Instant};

use util::{Env, sh};

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// What a backup that stores no file data may still add: one small pack of
/// the trees of the directories above the test's own (`/` down to
/// `target/tmp`), whose times change whenever another test makes or removes
/// its directory there. File data stored again would be hundreds of KiB.
const ANCESTOR_TREES: u64 = 8 * 1024;

#[test]
fn appending_1mib_to_a_1gib_file_adds_only_a_few_mib() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = src.join("big.img");
    sh(&format!("head -c 1G /dev/urandom > {}", big.display()));
    std::thread::sleep(Duration::from_millis(1100));
    let first = env.backup(&[&src]);
    assert!(n(&first, "bytes_added") > 1 << 30, "{first}");
    sh(&format!("head -c 1M /dev/urandom >> {}", big.display()));
    let second = env.backup(&[&src]);
    eprintln!("second backup added {} bytes", n(&second, "bytes_added"));
    assert_eq!(n(&second, "bytes_read"), (1 << 30) + (1 << 20));
    assert!(n(&second, "bytes_added") < 10 << 20, "{second}");
    assert_eq!(n(&second, "files_changed"), 1);
}

#[test]
fn unchanged_files_are_not_read_again() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in 0..10 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..50 {
            std::fs::write(
                src.join(format!("d{d}/f{f}")),
                format!("file {d}/{f}\n").repeat(100),
            )
            .unwrap();
        }
    }
    // Files changed within a timestamp tick of a run may still be changing:
    // let them settle so the first run may remember them.
    std::thread::sleep(Duration::from_millis(1100));
    let first = env.backup(&[&src]);
    assert_eq!(n(&first, "files_new"), 500);
    let second = env.backup(&[&src]);
    assert_eq!(n(&second, "files_unchanged"), 500, "{second}");
    assert_eq!(n(&second, "bytes_read"), 0, "{second}");
    assert_eq!(
        n(&second, "bytes_added"),
        0,
        "an unchanged tree stores nothing new: {second}"
    );

    // One file modified: only it is read.
    std::fs::write(src.join("d3/f7"), "changed\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let third = env.backup(&[&src]);
    assert_eq!(n(&third, "files_changed"), 1, "{third}");
    assert_eq!(n(&third, "files_unchanged"), 499, "{third}");
    assert_eq!(n(&third, "bytes_read"), 8);

    // Without the files cache, a full key reads the parent snapshot's trees
    // instead: nothing is read again and nothing new is stored.
    let clear_cache = || {
        for e in std::fs::read_dir(env.path("cache")).unwrap() {
            std::fs::remove_dir_all(e.unwrap().path()).unwrap();
        }
    };
    clear_cache();
    let fourth = env.backup(&[&src]);
    assert_eq!(n(&fourth, "files_unchanged"), 500, "{fourth}");
    assert_eq!(n(&fourth, "bytes_read"), 0, "{fourth}");
    assert!(n(&fourth, "bytes_added") < ANCESTOR_TREES, "{fourth}");

    // A damaged files cache is the same as none.
    let mut damaged = 0;
    for e in util::files_under(&env.path("cache")) {
        if e.to_string_lossy().contains("/files/") {
            util::flip_byte(&e, 40);
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    let fifth = env.backup(&[&src]);
    assert_eq!(n(&fifth, "files_unchanged"), 500, "{fifth}");
    env.restore_matches("latest", &src);

    // A writer key cannot read the parent's trees: without its files cache
    // it reads everything again, and still stores nothing new.
    let writer = |args: &[&str]| env.writer(args).ok().json();
    let src_s = src.to_str().unwrap();
    writer(&["--json", "backup", src_s]);
    assert_eq!(n(&writer(&["--json", "backup", src_s]), "files_unchanged"), 500);
    clear_cache();
    let again = writer(&["--json", "backup", src_s]);
    assert_eq!(n(&again, "files_new"), 500, "{again}");
    assert!(n(&again, "bytes_added") < ANCESTOR_TREES, "{again}");
}

/// Every file's xattrs below `dir`, as getfattr lists them (relative names).
fn xattrs_below(dir: &std::path::Path) -> String {
    let o = std::process::Command::new("getfattr")
        .args(["-R", "-d", "-m", "-", "-e", "hex", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn xattrs_of_unchanged_files_come_from_the_cache_and_a_change_is_seen() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for f in ["a", "b", "d/c"] {
        std::fs::write(src.join(f), format!("{f}\n")).unwrap();
    }
    sh(&format!(
        "cd {} && setfattr -n user.one -v 1 a && setfattr -n user.bin -v 0x00ff d/c",
        src.display()
    ));
    std::thread::sleep(Duration::from_millis(1100));
    let restored_xattrs = || {
        let out = env.restore_matches("latest", &src);
        xattrs_below(&util::under(&out, &src))
    };
    let want = xattrs_below(&src);
    assert!(want.contains("user.one") && want.contains("user.bin"), "{want}");
    env.backup(&[&src]);
    // Unchanged: content and xattrs come from the files cache.
    let second = env.backup(&[&src]);
    assert_eq!(n(&second, "files_unchanged"), 3, "{second}");
    assert_eq!(restored_xattrs(), want);

    // Setting, changing and removing xattrs changes only the ctime: each
    // such file is looked at again, through the files cache and, without
    // it, through the parent snapshot's trees.
    let changes = [
        "setfattr -n user.one -v 2 a && setfattr -n user.new -v x b && setfattr -x user.bin d/c",
        "setfattr -n user.one -v 3 a && setfattr -x user.new b && setfattr -n user.bin -v 0x01 d/c",
    ];
    for (round, change) in changes.iter().enumerate() {
        sh(&format!("cd {} && {change}", src.display()));
        let clear_cache = round == 1;
        std::thread::sleep(Duration::from_millis(1100));
        if clear_cache {
            for e in std::fs::read_dir(env.path("cache")).unwrap() {
                std::fs::remove_dir_all(e.unwrap().path()).unwrap();
            }
        }
        let want = xattrs_below(&src);
        let run = env.backup(&[&src]);
        assert_eq!(n(&run, "files_unchanged"), 0, "{run}");
        assert_eq!(restored_xattrs(), want, "round {round}");
        // And the next, unchanged run keeps them.
        let run = env.backup(&[&src]);
        assert_eq!(n(&run, "files_unchanged"), 3, "{run}");
        assert_eq!(restored_xattrs(), want, "round {round}, unchanged");
    }
}

#[test]
fn killed_backup_leaves_no_snapshot_and_its_packs_are_reused() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        sh(&format!("head -c 64M /dev/urandom > {}/f{i}", src.display()));
    }
    let mut child = env
        .cmd()
        .arg("-r")
        .arg(env.repo())
        .arg("-k")
        .arg(&env.keys.full)
        .args(["backup", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let packs = env.repo_objects("packs").len();
        if packs >= 6 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup finished before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let written: u64 = env
        .repo_objects("packs")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(written >= 6 * (16 << 20));

    assert_eq!(
        env.snapshots().as_array().unwrap().len(),
        0,
        "no snapshot from a killed run"
    );
    let r = env.run(&["check"]).ok();
    assert!(r.stderr().contains("not indexed yet"), "{}", r.stderr());

    let resumed = env.backup(&[&src]);
    let total = 8u64 * (64 << 20);
    let added = n(&resumed, "bytes_added");
    eprintln!("killed run wrote {written} bytes of packs; the next run added {added} of {total}");
    assert!(
        added + written - (16 << 20) <= total + (4 << 20),
        "packs were not reused: {resumed}"
    );
    env.run(&["check", "--read-data"]).ok();
    env.restore_matches("latest", &src);
}

/// Many large files in one directory are read at once, some in the
/// pipeline (large batches read ahead), some beside it (small batches),
/// the rest waiting for either. Whichever way a file was read, it is cut
/// into the same chunks as when it is streamed alone through standard
/// input, which reads it another way again: backed up from there, no file
/// adds data. And every file comes back byte for byte.
#[test]
fn large_files_read_at_once_are_cut_alike_whichever_way_they_are_read() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mib = 1 << 20;
    let sizes = [
        2 * mib + 1,
        2 * mib + 4096,
        3 * mib + 123,
        5 * mib,
        7 * mib + 4095,
        9 * mib + 1,
        11 * mib,
        13 * mib + 17,
        17 * mib + 8191,
        23 * mib + 5,
    ];
    let mut names = Vec::new();
    let mut total = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        names.push(format!("f{i}"));
        util::random_file(&src.join(&names[i]), size, 1000 + i as u64);
        total += size as u64;
    }
    // A compressible one, so that some chunks are compressed.
    let text: String = (0..400_000).map(|i| format!("line {i} of the text\n")).collect();
    std::fs::write(src.join("text"), &text).unwrap();
    names.push("text".into());
    total += text.len() as u64;
    std::thread::sleep(Duration::from_millis(1100));

    let first = env.backup(&[&src]);
    assert_eq!(n(&first, "bytes_read"), total, "{first}");
    for name in &names {
        let out = env
            .cmd()
            .arg("-r")
            .arg(env.repo())
            .arg("-k")
            .arg(&env.keys.full)
            .args(["--json", "backup", "--stdin", "--stdin-filename", name])
            .stdin(std::fs::File::open(src.join(name)).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            n(&summary, "bytes_added") < 16 * 1024,
            "{name}, read whole from standard input, was stored again: {summary}"
        );
    }
    env.restore_matches(first["snapshot_id"].as_str().unwrap(), &src);
}
