//! `diff`, `find` and `stats` on three nights of a changing tree: exactly
//! the paths added, removed and changed; which nights held a file, newest
//! first; sizes that add up to what restoring each snapshot would write.

mod util;

use std::collections::BTreeSet;
use std::path::Path;

use util::{Env, history};

fn set(v: &serde_json::Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect()
}

fn bytes_of_files(dir: &Path) -> u64 {
    util::files_under(dir)
        .iter()
        .map(|p| std::fs::symlink_metadata(p).unwrap().len())
        .sum()
}

#[test]
fn diff_find_and_stats_tell_what_changed_where_a_file_was_and_what_dedup_saves() {
    let env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    let s = src.to_str().unwrap();
    let p = |rel: &str| format!("{s}/{rel}");

    // Night 1 → 2: two big files and twenty small ones went, one came.
    let d = env.run(&["--json", "diff", &gens[0].1, &gens[1].1]).ok().json();
    let mut removed: BTreeSet<String> = ["big0", "big1"].iter().map(|f| p(f)).collect();
    removed.extend((0..20).map(|i| p(&format!("small/t{i}"))));
    assert_eq!(set(&d, "removed"), removed, "{d}");
    assert_eq!(set(&d, "added"), BTreeSet::from([p("new0")]));
    assert_eq!(set(&d, "changed"), BTreeSet::new(), "{d}");
    assert_eq!(
        d["summary"]["bytes_removed"].as_u64().unwrap(),
        bytes_of_files(&gens[0].0) - bytes_of_files(&gens[1].0) + (512 << 10)
    );

    // Night 2 → 3: one went, one changed in content.
    let d = env.run(&["--json", "diff", &gens[1].1, &gens[2].1]).ok().json();
    assert_eq!(set(&d, "removed"), BTreeSet::from([p("big2")]));
    assert_eq!(set(&d, "changed"), BTreeSet::from([p("small/t30")]));
    assert!(
        d["changed"][0]["what"]
            .as_array()
            .unwrap()
            .contains(&"content".into()),
        "{d}"
    );

    // A fourth night: a mode changed, a symlink and a directory came.
    std::fs::set_permissions(
        src.join("big3"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("big3", src.join("link")).unwrap();
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/inner"), "inner\n").unwrap();
    let fourth = env
        .run(&["--json", "backup", "--time", "2026-01-04T00:30:00Z", s])
        .ok()
        .json();
    let fourth = fourth["snapshot_id"].as_str().unwrap().to_string();
    let d = env.run(&["--json", "diff", &gens[2].1, &fourth]).ok().json();
    assert_eq!(
        set(&d, "added"),
        BTreeSet::from([p("link"), p("sub"), p("sub/inner")]),
        "{d}"
    );
    assert_eq!(set(&d, "changed"), BTreeSet::from([p("big3")]), "{d}");
    assert_eq!(d["changed"][0]["what"], serde_json::json!(["mode"]), "{d}");
    let text = env.run(&["diff", &gens[2].1, &fourth]).ok().stdout();
    assert!(text.contains(&format!("+  {}", p("sub/inner"))), "{text}");
    assert!(text.contains(&format!("M  {}  (mode)", p("big3"))), "{text}");
    // The same snapshot twice: nothing.
    let d = env.run(&["--json", "diff", &fourth, &fourth]).ok().json();
    assert_eq!(d["summary"]["changed"], 0);

    // "Which night did this file still exist?": newest first.
    let f = env.run(&["--json", "find", "big2"]).ok().json();
    let ids: Vec<&str> = f
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![gens[1].1.as_str(), gens[0].1.as_str()], "{f}");
    assert_eq!(f[0]["matches"][0]["path"], p("big2"));
    assert_eq!(f[0]["matches"][0]["size"], 512 << 10);
    // A pattern with a slash matches whole paths; `*` stays in one name.
    let f = env.run(&["--json", "find", "**/small/t3?"]).ok().json();
    assert_eq!(f.as_array().unwrap().len(), 4, "{f}");
    assert_eq!(f[0]["matches"].as_array().unwrap().len(), 10);
    let f = env.run(&["--json", "find", &format!("{s}/*")]).ok().json();
    assert!(
        f[0]["matches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| !m["path"].as_str().unwrap().contains("/small/")),
        "{f}"
    );
    let f = env.run(&["--json", "find", "no-such-name"]).ok().json();
    assert_eq!(f, serde_json::json!([]));
    let r = env.run(&["find", "a[b"]).fails(2);
    assert!(r.stderr().contains("not a glob pattern"), "{}", r.stderr());

    // Stats: the logical size is what restoring each snapshot writes.
    let st = env.run(&["--json", "stats"]).ok().json();
    assert_eq!(st["snapshots"], 4);
    // (files_under lists regular files only, as the logical size counts.)
    let logical: u64 =
        gens.iter().map(|(state, _)| bytes_of_files(state)).sum::<u64>() + bytes_of_files(&src);
    assert_eq!(st["logical_bytes"].as_u64().unwrap(), logical, "{st}");
    assert!(st["deduplication_ratio"].as_f64().unwrap() > 2.5, "{st}");
    let stored = util::files_under(&env.repo())
        .iter()
        .filter(|f| !f.starts_with(env.repo().join("locks")) && !f.ends_with("config"))
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum::<u64>();
    assert_eq!(st["stored_bytes"].as_u64().unwrap(), stored, "{st}");
    // A writer key sees the catalog and the storage, not the contents.
    let w = env.writer(&["--json", "stats"]).ok().json();
    assert_eq!(w["snapshots"], 4);
    assert!(w.get("logical_bytes").is_none(), "{w}");
    let r = env.writer(&["find", "big2"]).fails(2);
    assert!(r.stderr().contains("writer key"), "{}", r.stderr());
    env.writer(&["diff", &gens[0].1, &gens[1].1]).fails(2);
}
