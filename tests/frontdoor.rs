//! The front door under bad input: missing paths, snapshots from the
//! future, damaged configs; and what every command says with `--json`
//! and with `-v`.

mod util;

use util::{Env, sample};

fn json_lines(r: &util::Run) -> Vec<serde_json::Value> {
    r.stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn missing_backup_paths_are_named_and_skipped_with_exit_3() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let missing = env.path("not-there");
    let r = env
        .run(&["backup", src.to_str().unwrap(), missing.to_str().unwrap()])
        .fails(3);
    assert!(
        r.stderr()
            .contains(&format!("warning: skipping {}: No such file", missing.display())),
        "{}",
        r.stderr()
    );
    let snaps = env.snapshots();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!([src.to_str().unwrap()]));
    env.run(&["dump", "latest", src.join("hello.txt").to_str().unwrap()])
        .ok();

    // None there: one sentence, exit 1, nothing written.
    let envelopes = env.repo_objects("keys").len();
    let r = env
        .run(&[
            "backup",
            missing.to_str().unwrap(),
            env.path("nor-this").to_str().unwrap(),
        ])
        .fails(1);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.stderr());
    assert!(
        r.stderr().contains("nothing to back up") && r.stderr().contains("nor-this"),
        "{}",
        r.stderr()
    );
    assert_eq!(env.repo_objects("keys").len(), envelopes);
    assert_eq!(env.snapshots().as_array().unwrap().len(), 1);
}

#[test]
fn latest_passes_over_a_snapshot_dated_in_the_future_and_says_so() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let file = src.join("f");
    std::fs::write(&file, "now").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    std::fs::write(&file, "from the future").unwrap();
    let future = env
        .run(&[
            "--json",
            "backup",
            "--time",
            "2999-01-01T00:00:00Z",
            src.to_str().unwrap(),
        ])
        .ok()
        .json();
    let short = future["short_id"].as_str().unwrap();
    let r = env.run(&["dump", "latest", file.to_str().unwrap()]).ok();
    assert_eq!(r.out.stdout, b"now");
    assert!(
        r.stderr().contains("warning") && r.stderr().contains(short),
        "{}",
        r.stderr()
    );
    // Named by its id, it is still there.
    let r = env.run(&["dump", short, file.to_str().unwrap()]).ok();
    assert_eq!(r.out.stdout, b"from the future");
}

#[test]
fn a_damaged_config_is_named_in_one_sentence() {
    let env = Env::new();
    env.init();
    let config = env.repo().join("config");
    let good = std::fs::read(&config).unwrap();
    let expected = format!("the config of {} is damaged", env.repo().display());
    for bad in [
        b"garbage, not a config at all".to_vec(),
        good[..good.len() / 2].to_vec(),
    ] {
        std::fs::write(&config, &bad).unwrap();
        let r = env.run(&["snapshots"]).fails(1);
        assert_eq!(r.stderr().trim(), format!("strongroom: {expected}"));
    }
}

#[test]
fn verbose_backup_names_new_modified_and_unchanged_files() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let p = |rel: &str| src.join(rel).display().to_string();
    // Settled files are remembered by the files cache.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.run(&["-v", "backup", src.to_str().unwrap()]).ok().stdout();
    for f in ["hello.txt", "docs/deep/notes.md", "docs/blob.bin"] {
        assert!(out.contains(&format!("new {}\n", p(f))), "{out}");
    }
    assert!(!out.contains("unchanged /"), "{out}");

    std::fs::write(src.join("hello.txt"), "hello again, strongroom\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.run(&["-vv", "backup", src.to_str().unwrap()]).ok().stdout();
    assert!(out.contains(&format!("modified {}\n", p("hello.txt"))), "{out}");
    assert!(
        out.contains(&format!("unchanged {}\n", p("docs/blob.bin"))),
        "{out}"
    );
    let out = env.run(&["-v", "backup", src.to_str().unwrap()]).ok().stdout();
    assert!(!out.contains("unchanged /") && !out.contains("new /"), "{out}");
    // With --json, stdout stays one JSON document.
    let r = env.run(&["-vv", "--json", "backup", src.to_str().unwrap()]).ok();
    assert_eq!(r.json()["message_type"], "summary");
}

#[test]
fn every_command_answers_json_and_errors_are_json_objects() {
    let env = Env::new();
    let key = env.path("k.key");
    let k = key.to_str().unwrap();
    let run = |args: &[&str]| util::Run {
        out: env.cmd().args(args).output().unwrap(),
    };
    let v = run(&[
        "--json",
        "keygen",
        "--no-passphrase",
        "--bits",
        "3072",
        "--out",
        k,
    ])
    .ok()
    .json();
    assert_eq!((v["kind"].as_str(), v["path"].as_str()), (Some("full"), Some(k)));
    let r = |args: &[&str]| env.run_with(&key, args);
    r(&["--json", "init"]).ok().json();
    let src = sample(&env);
    r(&["backup", src.to_str().unwrap()]).ok();

    let w = env.path("w.key");
    let v = r(&[
        "--json",
        "key",
        "export-writer",
        "--host",
        "h",
        "--no-passphrase",
        "--bits",
        "3072",
        "--out",
        w.to_str().unwrap(),
    ])
    .ok()
    .json();
    assert_eq!(
        (v["kind"].as_str(), v["host"].as_str()),
        (Some("writer"), Some("h"))
    );
    let public = env.path("public");
    let v = env
        .run_with(
            &env.keys.other,
            &[
                "--json",
                "key",
                "export-public",
                "--out",
                public.to_str().unwrap(),
            ],
        )
        .ok()
        .json();
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);
    let v = r(&["--json", "key", "add-recipient", public.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(v["message_type"], "recipient");
    std::fs::write(env.path("pp"), "new one").unwrap();
    let v = r(&["--json", "key", "passwd", "--new-passphrase-file", "pp"])
        .ok()
        .json();
    assert_eq!(v["passphrase"], true);
    let r = |args: &[&str]| {
        let mut a = vec!["--passphrase-file", "pp"];
        a.extend(args);
        env.run_with(&key, &a)
    };

    let target = env.path("out");
    let v = r(&[
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
    .ok()
    .json();
    assert_eq!(v["message_type"], "summary");
    assert_eq!((v["files"].as_u64(), v["errors"].as_u64()), (Some(3), Some(0)));
    assert_eq!(v["target"].as_str(), target.to_str());
    let v = r(&["--json", "check", "--read-data"]).ok().json();
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(v["snapshots"], 1);
    assert!(v["packs"].as_u64().unwrap() > 0 && v["blobs"].as_u64().unwrap() > 0);

    // Errors: a JSON object on stdout, one line on stderr, the documented code.
    std::fs::write(env.path("not-a-key"), "hello").unwrap();
    for (e, code, clap) in [
        (r(&["--json", "ls", "zz"]), 2, false),
        (r(&["--json", "backup", "--no-such-flag"]), 2, true),
        (
            env.run_with(&env.path("not-a-key"), &["--json", "snapshots"]),
            1,
            false,
        ),
    ] {
        let e = e.fails(code);
        let v = e.json();
        assert_eq!(v["message_type"], "error", "{}", e.stdout());
        assert_eq!(v["exit_code"], code, "{}", e.stdout());
        assert!(!v["message"].as_str().unwrap().is_empty());
        if !clap {
            assert_eq!(e.stderr().lines().count(), 1, "{}", e.stderr());
        }
    }
    // A check that finds damage: its report, then the error.
    let (pack, name) = env.largest_pack();
    std::fs::remove_file(pack).unwrap();
    let e = r(&["--json", "check"]).fails(1);
    let lines = json_lines(&e);
    assert_eq!(lines.len(), 2, "{}", e.stdout());
    assert!(lines[0]["errors"][0].as_str().unwrap().contains(&name));
    assert_eq!(
        (lines[1]["message_type"].as_str(), lines[1]["exit_code"].as_i64()),
        (Some("error"), Some(1))
    );
}
