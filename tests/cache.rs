//! The cache directory: the index table, the run-key cache, and working
//! without a usable cache directory.

mod util;

use util::{Env, sample};

fn tables(env: &Env) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for repo in std::fs::read_dir(env.path("cache")).unwrap() {
        let dir = repo.unwrap().path().join("index-table");
        if let Ok(rd) = std::fs::read_dir(dir) {
            v.extend(rd.map(|e| e.unwrap().path()));
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
    env.run(&["snapshots"]).ok();
    env.restore_matches("latest", &src);
    let t = tables(&env);
    assert_eq!(t.len(), 1, "one table, for the current index files: {t:?}");
    let good = std::fs::read(&t[0]).unwrap();
    let size = good.len() as u64;

    // A damaged table is rebuilt, and reads are right.
    util::flip_byte(&t[0], size - 100);
    env.restore_matches("latest", &src);
    assert_eq!(std::fs::read(&t[0]).unwrap(), good, "the table was rebuilt");
    env.run(&["check", "--read-data"]).ok();

    // Each run's unwrapped keys are kept, sealed, in the cache directory.
    let runkeys = std::fs::read_dir(t[0].parent().unwrap().parent().unwrap().join("runkeys"))
        .unwrap()
        .count();
    assert!(runkeys >= 2, "{runkeys}");
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
