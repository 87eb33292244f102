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
