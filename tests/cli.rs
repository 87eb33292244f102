//! The command line end to end: keys, backup, snapshots, ls, dump, restore,
//! check, and what bad input gets.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use util::{Env, sh, under};

fn sample(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs/deep")).unwrap();
    std::fs::write(src.join("hello.txt"), "hello, strongroom\n").unwrap();
    std::fs::write(src.join("docs/deep/notes.md"), "# notes\n".repeat(1000)).unwrap();
    util::random_file(&src.join("docs/blob.bin"), 3 << 20, 7);
    std::os::unix::fs::symlink("hello.txt", src.join("link")).unwrap();
    src
}

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
fn writer_key_backs_up_but_cannot_read() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let w = env
        .writer(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json();
    let id = w["snapshot_id"].as_str().unwrap();
    // The catalog is readable with the writer key.
    let snaps = env.writer(&["--json", "snapshots"]).ok().json();
    assert_eq!(snaps[0]["host"], "writer-host");
    assert_eq!(snaps[0]["signed_by"], "writer:writer-host");
    let target = env.path("out");
    for args in [
        vec!["restore", id, "--target", target.to_str().unwrap()],
        vec!["dump", id, src.join("hello.txt").to_str().unwrap()],
        vec!["ls", id],
    ] {
        let r = env.writer(&args).fails(2);
        assert!(
            r.stderr().contains("writer key") && r.stderr().contains("cannot"),
            "{}",
            r.stderr()
        );
        assert!(r.out.stdout.is_empty());
    }
    assert!(!target.exists(), "a refused restore writes nothing");
    // A writer key may not sign for another host.
    env.writer(&["backup", "--host", "elsewhere", src.to_str().unwrap()])
        .fails(2);
    // The full key reads what the writer wrote.
    env.restore_matches(id, &src);
    env.writer(&["check"]).ok();
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn repository_holds_no_plaintext() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("Zanzibar-secret-dirname")).unwrap();
    let marker = "MARKER-7f3e-plaintext-must-not-leak ".repeat(200);
    std::fs::write(src.join("Zanzibar-secret-dirname/Quixotic-filename.txt"), &marker).unwrap();
    env.run(&["backup", "--tag", "Tagalong-label", src.to_str().unwrap()])
        .ok();
    for needle in [
        "MARKER-7f3e",
        "Zanzibar",
        "Quixotic",
        "Tagalong",
        src.to_str().unwrap(),
    ] {
        for (path, bytes) in env.repo_files() {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} appears in {}",
                path.display()
            );
        }
    }
}

#[test]
fn corrupted_pack_is_named_and_only_its_files_fail() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Two files in two packs: the first alone fills a 16 MiB data pack.
    util::random_file(&src.join("a-big.bin"), 17 << 20, 1);
    std::fs::write(src.join("z-small.txt"), "small and fine\n").unwrap();
    env.backup(&[&src]);
    // Damage the pack holding the big file: the largest one.
    let packs = env.repo_objects("packs");
    let big = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let pack_name = big.file_name().unwrap().to_str().unwrap().to_string();
    util::flip_byte(big, 1000);

    let r = env.run(&["check", "--read-data"]).fails(1);
    assert!(
        r.stderr().contains(&pack_name),
        "check names the pack: {}",
        r.stderr()
    );

    let target = env.path("out");
    let r = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .fails(1);
    assert!(
        r.stderr().contains("a-big.bin") && r.stderr().contains(&pack_name),
        "{}",
        r.stderr()
    );
    assert!(!r.stderr().contains("z-small"), "{}", r.stderr());
    assert_eq!(
        std::fs::read_to_string(under(&target, &src.join("z-small.txt"))).unwrap(),
        "small and fine\n"
    );
}

#[test]
fn missing_pack_is_an_error_for_check_and_restore() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let packs = env.repo_objects("packs");
    let biggest = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let name = biggest.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::remove_file(biggest).unwrap();
    let r = env.run(&["check"]).fails(1);
    assert!(r.stderr().contains(&name), "{}", r.stderr());
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .fails(1);
}

#[test]
fn tampered_or_resigned_manifest_is_refused() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let id = env.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    let id2 = env.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    let manifest = env.repo().join("snapshots").join(&id);
    let len = std::fs::metadata(&manifest).unwrap().len();
    util::flip_byte(&manifest, len / 2);

    let r = env.run(&["snapshots"]).fails(1);
    assert!(
        r.stderr().contains(&id) && r.stderr().contains("refused"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stdout().contains(&id2[..8]),
        "the good snapshot is still listed"
    );
    let r = env.run(&["restore", &id, "--target", "out"]).fails(1);
    assert!(r.stderr().contains(&id), "{}", r.stderr());
    let r = env.run(&["check"]).fails(1);
    assert!(r.stderr().contains(&id), "{}", r.stderr());
    std::fs::remove_file(&manifest).unwrap();
    env.run(&["check"]).ok();

    // Re-sign the good manifest's body with another root key, under a
    // correct content name: the signature no longer verifies under our root.
    let good = env.repo().join("snapshots").join(&id2);
    let bytes = std::fs::read(&good).unwrap();
    let signed: strongroom::format::Signed = postcard::from_bytes(&bytes).unwrap();
    let other = match strongroom::keys::load(&env.keys.other, &Default::default()).unwrap() {
        strongroom::keys::Key::Full(k) => k,
        _ => unreachable!(),
    };
    let sig = other
        .root
        .sign(strongroom::format::manifest::SIGNED_TYPE, &signed.body)
        .unwrap();
    let forged = postcard::to_stdvec(&strongroom::format::Signed {
        body: signed.body,
        signature: sig,
    })
    .unwrap();
    let forged_id = strongroom::format::Id::of_bytes(&forged).to_hex();
    std::fs::write(env.repo().join("snapshots").join(&forged_id), &forged).unwrap();
    let r = env.run(&["snapshots"]).fails(1);
    assert!(
        r.stderr().contains(&forged_id) && r.stderr().contains("signature"),
        "{}",
        r.stderr()
    );
    env.run(&["restore", &forged_id, "--target", "out"]).fails(1);
    env.run(&["check"]).fails(1);

    // Another key altogether cannot even open the repository.
    let r = env.run_with(&env.keys.other, &["snapshots"]).fails(1);
    assert!(r.stderr().contains("not signed by this key"), "{}", r.stderr());
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
        .fails(2);

    // `.` and `..` resolve to the real directories.
    env.run(&["backup", &format!("{}/../src/.", src.display())]).ok();
    let snaps = env.snapshots();
    let newest = snaps.as_array().unwrap().last().unwrap();
    assert_eq!(newest["paths"][0], src.to_str().unwrap());
}

#[test]
fn unreadable_files_give_exit_3_and_are_named() {
    let env = Env::new();
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
    let _ = Path::new("");
}

#[test]
fn one_file_system_stops_at_mount_points() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let mnt = src.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=1m strongroom-test {}",
        mnt.display()
    ));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
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
fn a_repository_that_goes_back_is_reported() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let newest = env.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    let r = env.run(&["snapshots"]).ok();
    assert!(!r.stderr().contains("rolled back"), "{}", r.stderr());

    // Someone with access to the storage removes the newest snapshot.
    std::fs::remove_file(env.repo().join("snapshots").join(&newest)).unwrap();
    let r = env.run(&["snapshots"]).ok();
    assert!(
        r.stderr().contains(&newest[..8]) && r.stderr().contains("rolled back"),
        "{}",
        r.stderr()
    );

    // Or puts back an older config.
    let old_config = std::fs::read(env.repo().join("config")).unwrap();
    env.run(&["key", "export-public", "--out", "pub"]).ok();
    let other_pub = env.path("other.pub");
    env.run_with(
        &env.keys.other,
        &["key", "export-public", "--out", other_pub.to_str().unwrap()],
    )
    .ok();
    env.run(&["key", "add-recipient", other_pub.to_str().unwrap()])
        .ok();
    env.run(&["snapshots"]).ok();
    std::fs::write(env.repo().join("config"), old_config).unwrap();
    let r = env.run(&["snapshots"]).ok();
    assert!(
        r.stderr().contains("config is at version 1, but version 2"),
        "{}",
        r.stderr()
    );
}

#[test]
fn passphrase_prompt_on_a_terminal() {
    // `script` gives strongroom a real pseudo-terminal; the passphrase is
    // typed on it (twice for a new key), and is not echoed.
    let env = Env::new();
    let typed = |cmd: &str, input: &str| {
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
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for line in input.lines() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            writeln!(stdin, "{line}").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
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
