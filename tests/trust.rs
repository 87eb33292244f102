//! The trust model end to end: what a writer key cannot do, what the
//! storage cannot see, and how damage and tampering are reported.

mod util;

use util::{Env, sample, under};

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
    std::fs::hard_link(src.join("a-big.bin"), src.join("b-link.bin")).unwrap();
    std::fs::write(src.join("z-small.txt"), "small and fine\n").unwrap();
    env.backup(&[&src]);
    // Damage the pack holding the big file: the largest one.
    let (big, pack_name) = env.largest_pack();
    util::flip_byte(&big, 1000);

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
        r.stderr().contains("a-big.bin")
            && r.stderr().contains(&pack_name)
            && r.stderr().contains("b-link.bin"),
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
    let (biggest, name) = env.largest_pack();
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
    // A client that verified it before keeps what it verified (`check`
    // reads it again); one that did not, refuses it.
    std::fs::remove_dir_all(env.path("cache")).unwrap();

    // The damaged manifest is named; the others are listed.
    let r = env.run(&["snapshots"]).ok();
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
        .root()
        .unwrap()
        .sign(strongroom::format::manifest::SIGNED_TYPE, &signed.body)
        .unwrap();
    let forged = postcard::to_stdvec(&strongroom::format::Signed {
        body: signed.body,
        signature: sig,
    })
    .unwrap();
    let forged_id = strongroom::format::Id::of_bytes(&forged).to_hex();
    std::fs::write(env.repo().join("snapshots").join(&forged_id), &forged).unwrap();
    let r = env.run(&["snapshots"]).ok();
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
fn a_full_disk_fails_one_clear_sentence_and_damages_nothing() {
    let env = Env::new();
    let small = env.path("small");
    let tmpfs = util::Tmpfs::mount(&small, "8m");
    let repo = small.join("repo");
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .arg("-r")
            .arg(&repo)
            .arg("-k")
            .arg(&env.keys.full)
            .args(args)
            .output()
            .unwrap();
        util::Run { out }
    };
    run(&["init"]).ok();
    let src = sample(&env);
    util::random_file(&src.join("big.bin"), 20 << 20, 3);
    let r = run(&["backup", src.to_str().unwrap()]).fails(1);
    let err = r.stderr();
    assert!(
        err.contains("No space left on device") && err.contains("pack"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("strongroom:")).count(),
        1,
        "{err}"
    );
    let snaps = run(&["--json", "snapshots"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 0);
    run(&["check"]).ok();
    assert_eq!(
        util::files_under(&repo.join("tmp")),
        Vec::<std::path::PathBuf>::new()
    );

    // Once there is room again, the same backup completes. (A pack stored
    // beside the failing one may have landed: the next run indexes it
    // again, so the room it takes is not lost.)
    tmpfs.resize("64m");
    run(&["backup", src.to_str().unwrap()]).ok();
    run(&["check", "--read-data"]).ok();
}
