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

/// Owner, group and permission bits come back exactly whatever the target
/// directory would give new files: its own group (setgid), a default ACL,
/// or nothing in particular (where files are created with their final
/// bits from the start).
#[test]
fn files_keep_their_owner_and_mode_whatever_the_target_gives_new_files() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    sh(&format!(
        "mkdir -p {s}/d && cd {s} && \
         echo a > plain644 && chmod 644 plain644 && \
         echo b > exec755 && chmod 755 exec755 && \
         echo c > private600 && chmod 600 private600 && \
         echo d > group640 && chmod 640 group640 && \
         echo e > world666 && chmod 666 world666 && \
         echo f > d/foreign && chown 1234:5678 d/foreign && chmod 644 d/foreign && \
         echo g > d/rootgroup && chown 0:5678 d/rootgroup && chmod 644 d/rootgroup && \
         echo h > d/setuid && chmod 4755 d/setuid",
        s = src.display()
    ));
    let files = [
        "plain644",
        "exec755",
        "private600",
        "group640",
        "world666",
        "d/foreign",
        "d/rootgroup",
        "d/setuid",
    ];
    env.backup(&[&src]);
    for (name, setup) in [
        ("plain", ""),
        ("setgid", "chgrp 4242 {t} && chmod 2775 {t}"),
        ("acl", "setfacl -d -m u::rwx,g::---,o::--- {t}"),
    ] {
        let t = env.path(name);
        std::fs::create_dir(&t).unwrap();
        if !setup.is_empty() {
            sh(&setup.replace("{t}", t.to_str().unwrap()));
        }
        env.run(&["restore", "latest", "--target", t.to_str().unwrap()])
            .ok();
        let restored = under(&t, &src);
        for f in files {
            let a = std::fs::symlink_metadata(src.join(f)).unwrap();
            let b = std::fs::symlink_metadata(restored.join(f)).unwrap();
            assert_eq!(
                (b.mode() & 0o7777, b.uid(), b.gid()),
                (a.mode() & 0o7777, a.uid(), a.gid()),
                "{f} restored into the {name} target: mode, owner, group"
            );
        }
    }
}

/// Restore reads the small files of a snapshot in the order of their packs,
/// whatever their directories: 900 files in 100 directories (one a copy of
/// another in each) take a couple of ranged reads, not one (or more) per
/// directory. `-v` tells the count.
/// With few descriptors to spare (16 directories open at once), the
/// directories are closed and opened again as the files need them.
#[test]
fn small_files_of_many_directories_are_read_from_their_packs_together() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..8 {
            util::random_file(&dir.join(format!("f{f}")), 2000, (d * 8 + f) * 2 + 1);
        }
        // The same content again: its blob is read once.
        std::fs::copy(dir.join("f0"), dir.join("copy")).unwrap();
    }
    env.backup(&[&src]);
    for (out, nofile) in [("out", None), ("few-fds", Some(64))] {
        let target = env.path(out);
        let mut cmd = env.cmd();
        cmd.arg("-r").arg(env.repo_arg()).arg("-k").arg(&env.keys.full);
        cmd.args(["-v", "restore", "latest", "--target", target.to_str().unwrap()]);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
            }
        }
        let run = util::Run {
            out: cmd.output().unwrap(),
        }
        .ok();
        sh(&format!(
            "diff -r {} {}",
            src.display(),
            under(&target, &src).display()
        ));
        let stderr = run.stderr();
        let (blobs, reads, _) = util::opened(&stderr);
        // Each directory's listing is a blob of its own, read on its own.
        let trees = blobs - 900;
        assert!(trees >= 101, "{stderr}");
        assert!(reads <= trees + 2, "{stderr}");
    }
}
