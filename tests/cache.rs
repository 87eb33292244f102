//! The cache directory: the index table, the run-key cache, and working
//! without a usable cache directory.

mod util;

use util::{Env, sample};

fn tables(env: &Env) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for repo in std::fs::read_dir(env.path("cache")).unwrap() {
        let dir = repo.unwrap().path().join("index-table");
        if let Ok(rd) = std::fs::read_dir(dir) {
            v.extend(rd.map(|e| e.unwrap().path()).filter(|p| p.extension().is_none()));
        }
    }
    v
}

#[test]
fn index_table_is_built_used_and_rebuilt_when_damaged() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    env.backup(&[&src]);
    // Start from no table: the next reader builds one from every index file.
    for t in tables(&env) {
        std::fs::remove_dir_all(t.parent().unwrap()).unwrap();
    }
    env.restore_matches("latest", &src);
    let t = tables(&env);
    assert_eq!(t.len(), 1, "one table: {t:?}");
    let good = std::fs::read(&t[0]).unwrap();
    assert!(
        good.len() > 1000,
        "the table holds the blobs: {} bytes",
        good.len()
    );

    // A damaged table is rebuilt, and reads are right.
    util::flip_byte(&t[0], good.len() as u64 / 2);
    env.restore_matches("latest", &src);
    assert_eq!(std::fs::read(&t[0]).unwrap(), good, "the table was rebuilt");
    env.run(&["check", "--read-data"]).ok();

    // A new backup's index file is read beside the table, which stays.
    std::fs::write(src.join("new-file"), "after the table was built").unwrap();
    env.backup(&[&src]);
    env.restore_matches("latest", &src);
    assert_eq!(tables(&env), t);
    assert_eq!(std::fs::read(&t[0]).unwrap(), good);

    // Each run's unwrapped keys are kept, sealed, in the cache directory.
    let runkeys = std::fs::read_dir(t[0].parent().unwrap().parent().unwrap().join("runkeys"))
        .unwrap()
        .count();
    assert!(runkeys >= 3, "{runkeys}");
}

#[test]
fn an_unusable_cache_directory_falls_back_to_memory_with_one_warning() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    std::fs::write(env.path("not-a-dir"), "").unwrap();
    let bad = env.path("not-a-dir/cache");
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .env("STRONGROOM_CACHE_DIR", &bad)
            .arg("-r")
            .arg(env.repo())
            .arg("-k")
            .arg(&env.keys.full)
            .args(args)
            .output()
            .unwrap();
        util::Run { out }
    };
    let r = run(&["backup", src.to_str().unwrap()]).ok();
    assert_eq!(r.stderr().matches("is not writable").count(), 1, "{}", r.stderr());
    let target = env.path("out");
    let r = run(&["restore", "latest", "--target", target.to_str().unwrap()]).ok();
    assert_eq!(r.stderr().matches("warning").count(), 1, "{}", r.stderr());
    util::sh(&format!(
        "diff -r {} {}",
        src.display(),
        util::under(&target, &src).display()
    ));
}

/// The cache directory of the repository (the only one in the sandbox).
fn repo_cache(env: &Env) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir(env.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// The names in a directory and the contents of its files, as text.
fn listing(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (
                e.file_name().into_string().unwrap(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_symlinked_index_table_directory_deletes_and_writes_nothing_outside_the_cache() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let victim = env.path("victim");
    std::fs::create_dir(&victim).unwrap();
    for n in ["thesis.tex", "photo.jpg", ".bashrc"] {
        std::fs::write(victim.join(n), format!("precious {n}")).unwrap();
    }
    let before = listing(&victim);
    let table_dir = repo_cache(&env).join("index-table");
    std::fs::remove_dir_all(&table_dir).unwrap();
    std::os::unix::fs::symlink(&victim, &table_dir).unwrap();

    env.run(&["snapshots"]).ok();
    assert_eq!(listing(&victim), before);
    env.backup(&[&src]);
    assert_eq!(listing(&victim), before);
    env.run(&["check", "--read-data"]).ok();
    assert_eq!(listing(&victim), before);
    env.restore_matches("latest", &src);
    assert_eq!(listing(&victim), before, "nothing outside the cache was touched");
    assert!(
        !std::fs::symlink_metadata(&table_dir)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced by a directory of the cache's own"
    );
    assert!(!tables(&env).is_empty(), "the table is kept again");
}

#[test]
fn a_cache_directory_another_user_owns_or_may_write_is_refused_with_one_warning() {
    for (name, setup) in [
        ("group-writable", "chmod 770"),
        ("world-writable", "chmod 707"),
        ("foreign", "chmod 700 $D && chown 12345"),
    ] {
        let env = Env::new();
        env.init();
        let src = sample(&env);
        let dir = env.path(name);
        std::fs::create_dir(&dir).unwrap();
        util::sh(&format!("D={0}; {setup} {0}", dir.display()));
        let run = |args: &[&str]| {
            let out = env
                .cmd()
                .env("STRONGROOM_CACHE_DIR", &dir)
                .arg("-r")
                .arg(env.repo())
                .arg("-k")
                .arg(&env.keys.full)
                .args(args)
                .output()
                .unwrap();
            util::Run { out }
        };
        let why = if name == "foreign" {
            "is owned by another user (uid 12345)"
        } else {
            "is writable by group or others"
        };
        let target = env.path("out");
        for args in [
            vec!["backup", src.to_str().unwrap()],
            vec!["snapshots"],
            vec!["restore", "latest", "--target", target.to_str().unwrap()],
            vec!["check"],
        ] {
            let r = run(&args).ok();
            assert_eq!(r.stderr().matches("warning").count(), 1, "{name}: {}", r.stderr());
            assert!(r.stderr().contains(why), "{name}: {}", r.stderr());
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "{name}: nothing was written into it"
        );
        util::sh(&format!(
            "diff -r {} {}",
            src.display(),
            util::under(&target, &src).display()
        ));
    }
}

#[test]
fn a_new_cache_directory_is_made_private() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let dir = env.path("fresh/strongroom");
    let out = env
        .cmd()
        .env("STRONGROOM_CACHE_DIR", &dir)
        .arg("-r")
        .arg(env.repo())
        .arg("-k")
        .arg(&env.keys.full)
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    let r = util::Run { out }.ok();
    assert!(!r.stderr().contains("warning"), "{}", r.stderr());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{mode:o}");
}

#[test]
fn an_index_table_altered_and_resealed_with_plain_sha256_is_rebuilt_without_a_damage_report() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    // Start from no table: the next reader builds one from the index files.
    std::fs::remove_dir_all(repo_cache(&env).join("index-table")).unwrap();
    env.restore_matches("latest", &src);
    let t = tables(&env);
    assert_eq!(t.len(), 1, "{t:?}");
    let good = std::fs::read(&t[0]).unwrap();

    // Shift every blob's offset by one, and seal the table as the old
    // format did: a SHA-256 of everything before it.
    let mut bad = good.clone();
    let count = |at: usize| u64::from_le_bytes(bad[at..at + 8].try_into().unwrap()) as usize;
    let (packs, runs, blobs) = (count(8), count(16), count(24));
    let records = 32 + packs * 32 + runs * 16;
    for i in 0..blobs {
        let at = records + i * 56 + 40;
        let off = u32::from_le_bytes(bad[at..at + 4].try_into().unwrap()) + 1;
        bad[at..at + 4].copy_from_slice(&off.to_le_bytes());
    }
    let body = bad.len() - 32;
    let sum = strongroom::crypto::sha256(&bad[..body]);
    bad[body..].copy_from_slice(&sum);
    std::fs::write(&t[0], &bad).unwrap();

    env.restore_matches("latest", &src);
    assert_eq!(std::fs::read(&t[0]).unwrap(), good, "the table was rebuilt");
    let r = env.run(&["check", "--read-data"]).ok();
    assert!(!r.stderr().contains("error"), "{}", r.stderr());
}

#[test]
fn an_altered_rollback_record_is_warned_about_once() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    env.run(&["snapshots"]).ok();
    let record = repo_cache(&env).join("seen");
    util::flip_byte(&record, 3);
    let r = env.run(&["snapshots"]).ok();
    assert_eq!(
        r.stderr()
            .matches("is damaged; rollback detection starts over")
            .count(),
        1,
        "{}",
        r.stderr()
    );
    let r = env.run(&["snapshots"]).ok();
    assert!(!r.stderr().contains("warning"), "{}", r.stderr());
}

#[test]
fn a_snapshot_deleted_right_after_its_backup_is_reported() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let id = env.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    std::fs::remove_file(env.repo().join("snapshots").join(&id)).unwrap();
    let r = env.run(&["snapshots"]).ok();
    assert!(
        r.stderr().contains(&id[..8]) && r.stderr().contains("rolled back"),
        "{}",
        r.stderr()
    );
}

#[test]
fn verified_manifests_are_remembered_and_check_still_reads_them_all() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let first = env.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    let second = env.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(env.snapshots().as_array().unwrap().len(), 2);
    // One record for all of them, authenticated under the cache subkey.
    let remembered = repo_cache(&env).join("verified-snapshots");
    let two = std::fs::read(&remembered).unwrap();

    // The storage now damages a manifest this client verified before: a
    // listing needs no signature check for it, `check` reads it again.
    let manifest = env.repo().join("snapshots").join(&first);
    let len = std::fs::metadata(&manifest).unwrap().len();
    util::flip_byte(&manifest, len / 2);
    let r = env.run(&["--json", "snapshots"]).ok();
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert!(!r.stderr().contains("refused"), "{}", r.stderr());
    let r = env.run(&["check"]).fails(1);
    assert!(r.stderr().contains(&first), "{}", r.stderr());

    // A record another user altered is not believed: every manifest is
    // verified again, and the damaged one is refused.
    std::fs::write(&remembered, b"forged").unwrap();
    let r = env.run(&["--json", "snapshots"]).ok();
    let ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![second.clone()]);
    assert!(
        r.stderr().contains(&first) && r.stderr().contains("refused"),
        "{}",
        r.stderr()
    );
    // Verified again, it is remembered afresh, without the refused one.
    let one = std::fs::read(&remembered).unwrap();
    assert_ne!(one, b"forged");
    assert!(one.len() < two.len());
    // A manifest that is gone is forgotten.
    std::fs::remove_file(env.repo().join("snapshots").join(&second)).unwrap();
    env.run(&["snapshots"]).ok();
    assert!(std::fs::read(&remembered).unwrap().len() < one.len());
}
