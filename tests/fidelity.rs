//! Fidelity: a tree with every kind of entry and metadata, backed up and
//! restored, must come back with zero differences in any field.

mod util;

use std::os::unix::fs::MetadataExt;

use util::fidelity::compare;
use util::{Env, build_tricky_tree, sh, under};

#[test]
fn tricky_tree_restores_with_zero_differences() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_tricky_tree(&src);
    let summary = env.backup(&[&src]);
    assert_eq!(summary["errors"], 0);
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let restored = under(&target, &src);

    let diffs = compare(&src, &restored);
    assert!(
        diffs.is_empty(),
        "{} difference(s):\n{}",
        diffs.len(),
        diffs.join("\n")
    );

    // An independent opinion: rsync with hard links, ACLs, xattrs, checksums.
    let out = std::process::Command::new("rsync")
        .args(["-aHAXn", "--numeric-ids", "--checksum", "--itemize-changes"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", restored.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "rsync reports differences:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The sparse file's holes are holes: few blocks allocated.
    let m = std::fs::metadata(restored.join("sparse")).unwrap();
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file restored with {} blocks",
        m.blocks()
    );

    // The comparison itself can fail: a one-nanosecond change is caught.
    sh(&format!(
        "touch -h -d '2021-06-01 12:34:56.123456788' {}",
        restored.join("nanos").display()
    ));
    let diffs = compare(&src, &restored);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].starts_with("nanos: mtime"), "{diffs:?}");
}
