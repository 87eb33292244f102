//! The command line end to end: keys, backup, snapshots, ls, dump, restore,
//! check, and what bad input gets.

mod util;

use std::os::unix::fs::PermissionsExt;

use util::{Env, sample, sh, under};

#[test]
fn backup_snapshots_ls_dump_restore_round_trip() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let summary = env.backup(&[&src]);
    assert_eq!(summary["files_new"], 3);
    let id = summary["snapshot_id"].as_str().unwrap().to_string();

    let snaps = env.snapshots();
    let s = &snaps[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["short_id"], &id[..8]);
    assert_eq!(s["paths"][0], src.to_str().unwrap());
    assert!(s["time"].as_str().unwrap().ends_with('Z'));
    assert!(s["host"].is_string() && s["tags"].is_array());

    let ls = env.run(&["ls", &id[..8], src.to_str().unwrap()]).ok().stdout();
    assert!(
        ls.contains("hello.txt") && ls.contains("link -> hello.txt") && ls.contains("docs"),
        "{ls}"
    );

    let dumped = env
        .run(&["dump", "latest", src.join("hello.txt").to_str().unwrap()])
        .ok();
    assert_eq!(dumped.out.stdout, b"hello, strongroom\n");

    let target = env.restore_matches("latest", &src);
    // The target directory keeps its own metadata (the snapshot root is synthetic).
    let m = std::fs::metadata(&target).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o750);
    assert!(m.modified().unwrap() > std::time::SystemTime::now() - std::time::Duration::from_secs(600));

    // SNAPSHOT:PATH restores just that subtree, at its full path.
    let t2 = env.path("out2");
    let sub = src.join("docs/deep");
    env.run(&[
        "restore",
        &format!("{id}:{}", sub.display()),
        "--target",
        t2.to_str().unwrap(),
    ])
    .ok();
    sh(&format!(
        "diff -r {} {}",
        sub.display(),
        under(&t2, &sub).display()
    ));
    assert!(!under(&t2, &src.join("hello.txt")).exists());

    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn passphrase_protected_key_files() {
    let env = Env::new();
    let key = env.path("pp.key");
    std::fs::write(env.path("pass"), "correct horse\n").unwrap();
    std::fs::write(env.path("wrong"), "battery staple\n").unwrap();
    let k = key.to_str().unwrap();
    env.cmd()
        .args([
            "--passphrase-file",
            "pass",
            "keygen",
            "--bits",
            "3072",
            "--out",
            k,
        ])
        .output()
        .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
        .unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The secret part is sealed: no DER private key structure in clear.
    let bytes = std::fs::read(&key).unwrap();
    let k2 = util::keys();
    let plain = std::fs::read(&k2.full).unwrap();
    assert!(bytes.len() > 1000 && plain.len() > 1000);

    let run = |args: &[&str]| util::Run {
        out: env.cmd().args(args).output().unwrap(),
    };
    let r = run(&["-r", "repo", "-k", k, "--passphrase-file", "wrong", "init"]).fails(1);
    assert!(
        r.stderr().contains("wrong passphrase for key file"),
        "{}",
        r.stderr()
    );
    assert_eq!(r.stderr().lines().count(), 1, "one sentence: {}", r.stderr());
    assert!(!env.repo().exists(), "nothing written with a wrong passphrase");

    let out = env
        .cmd()
        .args(["-r", "repo", "-k", k, "init"])
        .env("STRONGROOM_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env
        .cmd()
        .args(["-r", "repo", "-k", k, "snapshots"])
        .env("STRONGROOM_PASSPHRASE_FILE", env.path("pass"))
        .output()
        .unwrap();
    assert!(out.status.success());
    // No terminal, no passphrase source: a usage error, not a hang.
    run(&["-r", "repo", "-k", k, "snapshots"]).fails(2);

    // key passwd: the old passphrase stops working, the new one works.
    std::fs::write(env.path("new"), "new one").unwrap();
    run(&[
        "-k",
        k,
        "--passphrase-file",
        "pass",
        "key",
        "passwd",
        "--new-passphrase-file",
        "new",
    ])
    .ok();
    run(&["-r", "repo", "-k", k, "--passphrase-file", "pass", "snapshots"]).fails(1);
    run(&["-r", "repo", "-k", k, "--passphrase-file", "new", "snapshots"]).ok();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn backup_options_tags_host_time_excludes_stdin() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    std::fs::write(src.join("skip.tmp"), "x").unwrap();
    std::fs::create_dir_all(src.join("cache")).unwrap();
    std::fs::write(src.join("cache/big"), "y").unwrap();
    std::fs::write(env.path("excludes"), "# comment\ncache\n").unwrap();
    env.run(&[
        "backup",
        "--tag",
        "a",
        "--tag",
        "b",
        "--host",
        "h1",
        "--time",
        "2024-03-05T10:20:30+01:00",
        "--exclude",
        "*.tmp",
        "--exclude-file",
        "excludes",
        src.to_str().unwrap(),
    ])
    .ok();
    let s = &env.snapshots()[0];
    assert_eq!(s["host"], "h1");
    assert_eq!(s["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(s["time"], "2024-03-05T09:20:30Z");
    let ls = env.run(&["ls", "latest", src.to_str().unwrap()]).ok().stdout();
    assert!(
        !ls.contains("skip.tmp") && !ls.contains("cache") && ls.contains("hello.txt"),
        "{ls}"
    );

    let out = env
        .cmd()
        .args(["-r", "repo", "-k"])
        .arg(&env.keys.full)
        .args([
            "--json",
            "backup",
            "--stdin",
            "--stdin-filename",
            "db.sql",
            "--host",
            "h2",
        ])
        .stdin(std::fs::File::open(src.join("docs/blob.bin")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dumped = env.run(&["dump", "latest", "--host", "h2", "/db.sql"]).ok();
    assert_eq!(
        dumped.out.stdout,
        std::fs::read(src.join("docs/blob.bin")).unwrap()
    );
    // `latest --host h1` is h1's newest, not the overall newest.
    env.run(&["ls", "latest", "--host", "h1", src.to_str().unwrap()])
        .ok();
    env.run(&["ls", "latest", "--host", "nobody"]).fails(2);
    env.run(&["ls", "zz"]).fails(2);
    env.run(&["backup", "--time", "yesterday", src.to_str().unwrap()])
        .fails(2);
    env.run(&["backup", env.path("does-not-exist").to_str().unwrap()])
        .fails(1);

    // Bad input is refused before anything is written.
    let envelopes = env.repo_objects("keys").len();
    env.run(&["backup", "--stdin", "--stdin-filename", "a/b"])
        .fails(2);
    assert_eq!(env.repo_objects("keys").len(), envelopes);

    // `.` and `..` resolve to the real directories.
    env.run(&["backup", &format!("{}/../src/.", src.display())]).ok();
    let snaps = env.snapshots();
    let newest = snaps.as_array().unwrap().last().unwrap();
    assert_eq!(newest["paths"][0], src.to_str().unwrap());
}

#[test]
fn unreadable_files_give_exit_3_and_are_named() {
    // Everything the unprivileged user gets lies where it can reach it,
    // wherever the checkout is.
    let env = Env::reachable();
    let src = sample(&env);
    std::fs::write(src.join("secret"), "no").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Run as an unprivileged user, for whom mode 000 means unreadable.
    let repo = env.repo();
    let key = env.path("k");
    std::fs::copy(&env.keys.full, &key).unwrap();
    sh(&format!(
        "chmod -R a+rwX {0} && chmod a+r {1} && chmod 000 {2}",
        env.dir.path().display(),
        key.display(),
        src.join("secret").display()
    ));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                util::BIN,
                "-r",
            ])
            .arg(&repo)
            .arg("-k")
            .arg(&key)
            .args(args)
            .env_clear()
            .env("STRONGROOM_CACHE_DIR", env.path("cache"))
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        util::Run { out }
    };
    run(&["init"]).ok();
    let r = run(&["backup", src.to_str().unwrap()]).fails(3);
    assert!(
        r.stderr()
            .contains(&format!("{}: ", src.join("secret").display())),
        "{}",
        r.stderr()
    );
    // The snapshot exists and holds the rest.
    assert_eq!(env.snapshots().as_array().unwrap().len(), 1);
}

#[test]
fn a_source_tree_deeper_than_readers_accept_is_backed_up_to_that_depth() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // 1,100 nested directories below `src`: 2,200 bytes of path.
    let mut deep = src.clone();
    for _ in 0..1100 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), "too deep").unwrap();
    std::fs::write(src.join("top"), "kept").unwrap();
    let r = env.run(&["backup", src.to_str().unwrap()]).fails(3);
    assert!(
        r.stderr().contains("nested more than 1024 directories deep"),
        "{}",
        r.stderr()
    );
    assert_eq!(env.snapshots().as_array().unwrap().len(), 1);
    env.run(&["check", "--read-data"]).ok();
    // Restore takes the snapshot as it is: down to depth 1024 from `/`.
    let out = env.path("out");
    env.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    let restored = util::under(&out, &src);
    assert_eq!(std::fs::read_to_string(restored.join("top")).unwrap(), "kept");
    let mut depth = src.components().count() - 1;
    let mut at = restored;
    while at.join("d").is_dir() {
        at.push("d");
        depth += 1;
    }
    assert_eq!(depth, 1024);
}

#[test]
fn one_file_system_stops_at_mount_points() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let mnt = src.join("mnt");
    let _tmpfs = util::Tmpfs::mount(&mnt, "1m");
    std::fs::write(mnt.join("on-tmpfs"), "other filesystem").unwrap();

    env.run(&["backup", "--one-file-system", src.to_str().unwrap()])
        .ok();
    let ls = env.run(&["ls", "latest", mnt.to_str().unwrap()]).ok().stdout();
    assert!(
        ls.trim().is_empty(),
        "the mount point is kept, its contents are not: {ls}"
    );
    let top = env.run(&["ls", "latest", src.to_str().unwrap()]).ok().stdout();
    assert!(top.contains("mnt"), "{top}");

    env.run(&["backup", src.to_str().unwrap()]).ok();
    let ls = env.run(&["ls", "latest", mnt.to_str().unwrap()]).ok().stdout();
    assert!(ls.contains("on-tmpfs"), "{ls}");
}

#[test]
fn passphrase_prompt_on_a_terminal() {
    // `script` gives strongroom a real pseudo-terminal; the passphrase is
    // typed on it (twice for a new key), and is not echoed.
    let env = Env::new();
    // Each line is typed once its prompt shows (echo is off by then), as
    // a person would.
    let typed = |cmd: &str, input: &str| {
        use std::io::{Read, Write};
        let mut child = std::process::Command::new("script")
            .args(["-qec", cmd, "/dev/null"])
            .current_dir(env.dir.path())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut stdout = child.stdout.take().unwrap();
        let reading = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                let _ = tx.send(buf[..n].to_vec());
            }
        });
        let mut out = Vec::new();
        let mut stdin = child.stdin.take().unwrap();
        for (i, line) in input.lines().enumerate() {
            // "New passphrase: ", "Passphrase for tty.key: ", ...
            let prompts = |out: &[u8]| out.windows(9).filter(|w| w == b"assphrase").count();
            while prompts(&out) <= i {
                match rx.recv_timeout(std::time::Duration::from_secs(120)) {
                    Ok(bytes) => out.extend(bytes),
                    Err(_) => panic!("no prompt {i}: {}", String::from_utf8_lossy(&out)),
                }
            }
            writeln!(stdin, "{line}").unwrap();
        }
        drop(stdin);
        let status = child.wait().unwrap();
        reading.join().unwrap();
        out.extend(rx.into_iter().flatten());
        (status.code(), String::from_utf8_lossy(&out).into_owned())
    };
    let bin = util::BIN;
    let (code, out) = typed(
        &format!("{bin} keygen --bits 3072 --out tty.key"),
        "s3cret typed\ns3cret typed\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("New passphrase:") && out.contains("Repeat"), "{out}");
    assert!(!out.contains("s3cret"), "the passphrase is not echoed: {out}");
    let (code, out) = typed(&format!("{bin} -r repo -k tty.key init"), "wrong\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("wrong passphrase"), "{out}");
    let (code, out) = typed(&format!("{bin} -r repo -k tty.key init"), "s3cret typed\n");
    assert_eq!(code, Some(0), "{out}");
}
