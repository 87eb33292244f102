//! Recovery keys and writer revocation: a key made elsewhere, added with
//! `key add-recipient`, reads the runs made before it was added as well as
//! those after, and with the repository's public file becomes a reading
//! key that restores everything once the original key file is gone. A
//! revoked writer's later snapshots are refused, its earlier ones count,
//! and its next backup fails; `key list` shows all of it.

mod util;

use std::path::Path;
use std::sync::Arc;

use strongroom::cache::Cache;
use strongroom::format::Timestamp;
use strongroom::format::manifest::{Catalog, Summary};
use strongroom::format::tree::{TREE_VERSION, Tree};
use strongroom::format::{BlobKind, encode};
use strongroom::repository::Repository;
use strongroom::repository::writer::Writer;
use util::{Env, Run, history, sh};

fn with_key(env: &Env, key: &Path, args: &[&str]) -> Run {
    env.run_with(key, args)
}

#[test]
fn a_recovery_key_made_elsewhere_restores_the_oldest_and_newest_snapshots_once_the_key_file_is_gone() {
    let env = Env::new();
    // The full key, as the user holds it: a file that can be lost.
    let full = env.path("main.key");
    std::fs::copy(&env.keys.full, &full).unwrap();
    with_key(&env, &full, &["init"]).ok();
    let (src, gens) = history(&env);
    // A writer's run too: its keys are wrapped for the new recipient as well.
    let w = env
        .writer(&[
            "--json",
            "backup",
            "--time",
            "2026-01-03T12:00:00Z",
            src.to_str().unwrap(),
        ])
        .ok();
    let writer_snapshot = w.json()["snapshot_id"].as_str().unwrap().to_string();

    // The recovery key: made on another machine (here: the `other` key),
    // only its public part travels.
    let recovery_pub = env.path("recovery.pub");
    with_key(
        &env,
        &env.keys.other,
        &["key", "export-public", "--out", recovery_pub.to_str().unwrap()],
    )
    .ok();
    let added = with_key(
        &env,
        &full,
        &["--json", "key", "add-recipient", recovery_pub.to_str().unwrap()],
    )
    .ok()
    .json();
    assert_eq!(added["past_runs"], 4, "{added}");
    let r = with_key(
        &env,
        &full,
        &["key", "add-recipient", recovery_pub.to_str().unwrap()],
    )
    .fails(2);
    assert!(r.stderr().contains("already a recipient"), "{}", r.stderr());

    // A night after: its own envelope wraps for the recovery key.
    std::fs::write(src.join("after-recovery-was-added"), "newest\n").unwrap();
    let newest = with_key(
        &env,
        &full,
        &[
            "--json",
            "backup",
            "--time",
            "2026-01-04T00:30:00Z",
            src.to_str().unwrap(),
        ],
    )
    .ok()
    .json()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let repo_pub = env.path("repository.pub");
    with_key(
        &env,
        &full,
        &["key", "export-public", "--out", repo_pub.to_str().unwrap()],
    )
    .ok();
    std::fs::remove_file(&full).unwrap();

    // Without the public file's root key, or from a key never added,
    // there is no reading key: one sentence each.
    let reading = env.path("reading.key");
    let recover = |key: &Path, public: &Path| {
        with_key(
            &env,
            key,
            &[
                "key",
                "recover",
                "--public",
                public.to_str().unwrap(),
                "--out",
                reading.to_str().unwrap(),
                "--no-passphrase",
            ],
        )
    };
    let r = recover(&env.keys.other, &recovery_pub);
    assert_eq!(
        r.code(),
        1,
        "its own root key did not sign this repository: {}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("not signed by this key's root key"),
        "{}",
        r.stderr()
    );
    let no_root = env.path("no-root.pub");
    let text = std::fs::read_to_string(&repo_pub).unwrap();
    std::fs::write(
        &no_root,
        text.lines().take(2).map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let r = recover(&env.keys.other, &no_root);
    assert_eq!(r.code(), 2, "{}", r.stderr());
    assert!(r.stderr().contains("carries no root key"), "{}", r.stderr());
    let r = recover(&env.keys.writer, &repo_pub);
    assert_eq!(r.code(), 2, "a writer key is no recovery key: {}", r.stderr());
    assert!(!reading.exists());

    recover(&env.keys.other, &repo_pub).ok();
    sh(&format!("rm -rf {}", env.path("cache").display()));
    with_key(&env, &reading, &["check", "--read-data"]).ok();
    let restore = |id: &str, state: &Path| {
        let target = env.path(&format!("out-{id}"));
        with_key(
            &env,
            &reading,
            &["restore", id, "--target", target.to_str().unwrap()],
        )
        .ok();
        util::fidelity::no_differences(state, &util::under(&target, &src));
    };
    restore(&gens[0].1, &gens[0].0);
    restore(&newest, &src);
    restore(&writer_snapshot, &gens[2].0);
    // It reads; it signs nothing.
    let r = with_key(&env, &reading, &["backup", src.to_str().unwrap()]).fails(2);
    assert!(r.stderr().contains("reading key"), "{}", r.stderr());
    let listed = with_key(&env, &reading, &["--json", "key", "list"]).ok().json();
    let me: Vec<_> = listed["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["this_key"] == true)
        .collect();
    assert_eq!(me.len(), 1, "{listed}");
    assert_eq!(me[0]["past_runs_wrapped"], true);
}

/// A snapshot signed with the writer key by a host that ignores its
/// revocation (the library, with the revocations dropped from the config
/// it read), dated `time`.
fn snapshot_ignoring_revocation(env: &Env, time: Timestamp) -> String {
    let key = strongroom::keys::load(&env.keys.writer, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let mut repo = Repository::open(backend, key.shared()).unwrap();
    repo.config.revoked.clear();
    let cache = Cache::open(Some(&env.path("attacker-cache")));
    let writer = Writer::begin(&repo, &key, &cache).unwrap();
    let tree = writer
        .add_blob(
            BlobKind::Tree,
            &encode(&Tree {
                version: TREE_VERSION,
                nodes: Vec::new(),
            }),
        )
        .unwrap();
    let (id, _) = writer
        .finish(Catalog {
            time,
            started: time,
            host: "writer-host".into(),
            paths: vec![b"/etc".to_vec()],
            tags: Vec::new(),
            parent: None,
            tree,
            summary: Summary::default(),
        })
        .unwrap();
    id.to_hex()
}

#[test]
fn a_revoked_writers_snapshots_made_later_are_refused_however_dated_and_it_backs_up_no_more() {
    let env = Env::new();
    env.init();
    let src = util::sample(&env);
    let s = src.to_str().unwrap();
    let earlier = env
        .writer(&["--json", "backup", "--time", "2026-01-01T00:00:00Z", s])
        .ok()
        .json();
    let earlier = earlier["snapshot_id"].as_str().unwrap().to_string();
    // Made before the revocation, dated an hour after it: it was there.
    let later_time = rfc3339(Timestamp::now().sec + 3600);
    let later = env
        .writer(&["--json", "backup", "--time", &later_time, s])
        .ok()
        .json();
    let later = later["snapshot_id"].as_str().unwrap().to_string();

    let listed = env.run(&["--json", "key", "list"]).ok().json();
    let writers = listed["writers"].as_array().unwrap();
    assert_eq!(writers.len(), 1, "{listed}");
    assert_eq!(writers[0]["host"], "writer-host");
    assert_eq!(writers[0]["runs"], 2);
    assert_eq!(writers[0]["revoked"], false);
    let fingerprint = writers[0]["fingerprint"].as_str().unwrap().to_string();

    let r = env.writer(&["key", "revoke-writer", "writer-host"]).fails(2);
    assert!(r.stderr().contains("writer key"), "{}", r.stderr());
    let rev = env
        .run(&["--json", "key", "revoke-writer", &fingerprint[..12]])
        .ok()
        .json();
    assert_eq!(rev["kept_snapshots"], 2, "{rev}");

    let r = env.writer(&["backup", s]).fails(1);
    assert!(
        r.stderr().contains("was revoked at") && r.stderr().lines().count() == 1,
        "{}",
        r.stderr()
    );
    // A host that ignores the revocation signs with its real key: refused,
    // dated now or dated long before the revocation.
    let forged_now = snapshot_ignoring_revocation(&env, Timestamp::now());
    let forged_old = snapshot_ignoring_revocation(
        &env,
        Timestamp {
            sec: 1_700_000_000,
            nsec: 0,
        },
    );
    let snaps = env.run(&["--json", "snapshots"]);
    let mut ids = util::snapshot_ids(&snaps.json());
    ids.sort();
    let mut want = vec![earlier.clone(), later.clone()];
    want.sort();
    assert_eq!(ids, want, "what was there at the revocation still counts");
    for f in [&forged_now, &forged_old] {
        assert!(
            snaps.stderr().contains(f.as_str()) && snaps.stderr().contains("was not there then"),
            "refused with a warning: {}",
            snaps.stderr()
        );
    }
    let r = env.run(&["restore", &forged_old, "--target", "out"]).fails(1);
    assert!(r.stderr().contains("revoked at"), "{}", r.stderr());
    env.restore_matches(&earlier, &src);
    // Refused for its revoked writer, a snapshot holds up no prune.
    env.run(&["prune"]).ok();
    env.restore_matches(&later, &src);
    // The refused ones go by name; then nothing is refused and check passes.
    let r = env
        .run(&["--json", "forget", &forged_now, &forged_old])
        .ok()
        .json();
    assert_eq!(r["remove"].as_array().unwrap().len(), 2, "{r}");
    let snaps = env.run(&["snapshots"]).ok();
    assert!(!snaps.stderr().contains("refused"), "{}", snaps.stderr());
    env.run(&["check"]).ok();

    let listed = env.run(&["--json", "key", "list"]).ok().json();
    assert_eq!(listed["writers"][0]["revoked"], true, "{listed}");
    assert_eq!(listed["revocations"][0]["writer"], fingerprint.as_str());
    assert_eq!(listed["revocations"][0]["host"], "writer-host");
    let text = env.run(&["key", "list"]).ok().stdout();
    assert!(
        text.contains("REVOKED") && text.contains("revocations:"),
        "{text}"
    );

    // Revoking a host covers the keys certified until then; one certified
    // afterwards (in a later second) is a new key, and backs up.
    env.run(&["key", "revoke-writer", "writer-host"]).ok();
    let revoked_at = Timestamp::now().sec;
    while Timestamp::now().sec <= revoked_at {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let fresh = env.path("fresh-writer.key");
    env.run(&[
        "key",
        "export-writer",
        "--host",
        "writer-host",
        "--no-passphrase",
        "--bits",
        "3072",
        "--out",
        fresh.to_str().unwrap(),
    ])
    .ok();
    let again = env.run_with(&fresh, &["--json", "backup", s]).ok().json();
    let again = again["snapshot_id"].as_str().unwrap();
    let ids = env.snapshots();
    assert!(ids.as_array().unwrap().iter().any(|s| s["id"] == again), "{ids}");
}

/// RFC 3339 of a Unix time, UTC.
fn rfc3339(t: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
