//! `prune` and `forget --prune`: what no snapshot references goes, packs
//! partly used are repacked, every kept snapshot restores identically, and
//! a prune killed at any moment leaves a repository that checks clean and
//! that the next prune completes. On local storage, S3 (Garage) and the
//! strongroom server.

mod util;

use std::sync::Arc;

use strongroom::format::lock::Lock;
use strongroom::format::{FORMAT_VERSION, Timestamp};
use strongroom::repository::{Repository, lock};
use util::{Env, history, random_file, restores_as, sh};

fn summary(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[test]
fn forget_prune_frees_what_only_forgotten_snapshots_used_and_keeps_the_rest_whole() {
    let env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    let before = util::files_under(&env.repo().join("packs")).len();

    let out = env
        .run(&["--json", "forget", "--keep-last", "2", "--prune"])
        .ok()
        .json();
    let p = &out["prune"];
    assert_eq!(out["groups"][0]["remove"][0]["id"], gens[0].1.as_str(), "{out}");
    // The first night's tree pack goes whole; its data pack, still mostly
    // used, is repacked without big0 and big1.
    assert!(summary(p, "packs_deleted") >= 1, "{p}");
    assert_eq!(summary(p, "packs_repacked"), 1, "{p}");
    assert!(
        summary(p, "bytes_freed") >= 1 << 20,
        "two 512 KiB files freed: {p}"
    );
    assert_eq!(summary(p, "unused_bytes_after"), 0, "{p}");
    assert!(util::files_under(&env.repo().join("packs")).len() <= before);
    env.run(&["check", "--read-data"]).ok();
    for (state, id) in &gens[1..] {
        restores_as(&env, id, &src, state);
    }

    // Nothing left to do: a second prune changes nothing.
    let files = env.repo_files();
    let again = env.run(&["--json", "prune"]).ok().json();
    for f in [
        "packs_deleted",
        "packs_repacked",
        "packs_written",
        "bytes_freed",
        "envelopes_deleted",
    ] {
        assert_eq!(summary(&again, f), 0, "{f}: {again}");
    }
    assert_eq!(
        env.repo_files(),
        files,
        "a prune with nothing to do writes nothing"
    );

    // A fourth night replaces everything: the runs before it are named by
    // no blob any more, and their key envelopes go with their packs.
    sh(&format!("rm -rf {0}/* && mkdir {0}/fresh", src.display()));
    random_file(&src.join("fresh/only"), 300 << 10, 300);
    let s = src.to_str().unwrap();
    let last = env
        .run(&["--json", "backup", "--time", "2026-01-04T00:30:00Z", s])
        .ok()
        .json();
    let envelopes = env.repo_objects("keys").len();
    assert_eq!(envelopes, 4);
    let out = env
        .run(&["--json", "forget", "--keep-last", "1", "--prune"])
        .ok()
        .json();
    assert_eq!(summary(&out["prune"], "envelopes_deleted"), 3, "{out}");
    assert_eq!(env.repo_objects("keys").len(), 1);
    env.run(&["check", "--read-data"]).ok();
    restores_as(&env, last["snapshot_id"].as_str().unwrap(), &src, &src.clone());
    let text = env.run(&["prune"]).ok().stdout();
    assert!(text.contains("0 B freed"), "{text}");
}

fn plant_lock(env: &Env, exclusive: bool) -> String {
    let key = strongroom::keys::load(&env.keys.full, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend, key.shared()).unwrap();
    let now = Timestamp::now();
    let l = Lock {
        format: FORMAT_VERSION,
        host: "other-host".into(),
        pid: 4242,
        exclusive,
        purpose: "backup".into(),
        created: now,
        refreshed: now,
    };
    lock::write(&repo, &key.shared().subkeys.index, &l).unwrap()
}

#[test]
fn prune_waits_for_no_one_refuses_writers_and_a_dry_run_changes_nothing() {
    let env = Env::new();
    env.init();
    history(&env);
    env.run(&["forget", "--keep-last", "1"]).ok();

    let files = env.repo_files();
    let dry = env.run(&["--json", "prune", "--dry-run"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    assert!(
        summary(&dry, "packs_deleted") + summary(&dry, "packs_repacked") > 0,
        "{dry}"
    );
    assert_eq!(env.repo_files(), files, "a dry run writes and deletes nothing");

    let r = env.writer(&["prune"]).fails(2);
    assert!(r.stderr().contains("writer key"), "{}", r.stderr());
    let r = env.writer(&["forget", "--keep-last", "1", "--prune"]).fails(2);
    assert!(r.stderr().contains("writer key"), "{}", r.stderr());

    // A live lock of a backup on another host keeps prune out, named.
    let held = plant_lock(&env, false);
    let r = env.run(&["prune"]).fails(1);
    assert!(
        r.stderr()
            .contains("the repository is in use: a lock of host other-host (pid 4242, backup)"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        env.repo_files().len(),
        files.len() + 1,
        "refused, it wrote nothing"
    );
    std::fs::remove_file(env.repo().join("locks").join(held)).unwrap();
    let done = env.run(&["--json", "prune"]).ok().json();
    for f in ["packs_deleted", "packs_repacked", "blobs_moved", "bytes_moved"] {
        assert_eq!(summary(&done, f), summary(&dry, f), "{f}: {done}\n{dry}");
    }
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn a_writers_unsound_copies_of_referenced_blobs_never_replace_the_sound_ones() {
    unsound_copies(true);
}

#[test]
fn a_writers_unsound_copies_in_a_pack_no_index_names_never_replace_the_sound_ones() {
    unsound_copies(false);
}

fn unsound_copies(indexed: bool) {
    use strongroom::format::BlobKind;
    use strongroom::format::index::PackEntries;
    use strongroom::repository::index;
    use strongroom::repository::packer::Packer;

    let env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    // A host with a writer key (and the storage's help) uploads one pack
    // claiming a copy of every blob the repository holds, filled with
    // noise, indexed: as the pack with the most referenced bytes, it is
    // the copy a naive prune would keep, deleting every sound one.
    let key = strongroom::keys::load(&env.keys.writer, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend.clone(), key.shared()).unwrap();
    let subkeys = &key.shared().subkeys;
    let mut honest: Vec<PackEntries> = Vec::new();
    for p in env.repo_objects("index") {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        honest.extend(
            index::read_index_file(backend.as_ref(), subkeys, &repo.id(), &name)
                .unwrap()
                .packs,
        );
    }
    let mut packer = Packer::new(1 << 30);
    let mut claimed = 0;
    for e in honest.iter().flat_map(|p| p.blobs.iter()) {
        packer.add(*e, &vec![0x5a; e.length as usize]);
        claimed += (e.kind == BlobKind::Data) as usize;
    }
    assert!(claimed > 8);
    let fake = packer.finish(subkeys, &repo.id()).unwrap().unwrap();
    use strongroom::backend::Backend;
    backend
        .write(strongroom::backend::Kind::Packs, &fake.id.to_hex(), &fake.bytes)
        .unwrap();
    if indexed {
        index::write_index_file(backend.as_ref(), subkeys, &repo.id(), vec![fake.entries.clone()]).unwrap();
        env.run(&["check", "--read-data"]).fails(1);
    }

    let r = env.run(&["--json", "prune"]).ok();
    assert!(
        r.stderr().contains(&format!("pack {}", fake.id)) && r.stderr().contains("is unsound"),
        "{}",
        r.stderr()
    );
    let p = r.json();
    assert!(summary(&p, "packs_deleted") >= 1, "the noise goes: {p}");
    assert!(
        !env.repo_objects("packs")
            .iter()
            .any(|f| f.ends_with(fake.id.to_hex())),
        "the forged pack is deleted"
    );
    env.run(&["check", "--read-data"]).ok();
    for (state, id) in &gens {
        restores_as(&env, id, &src, state);
    }
}

/// Runs prune under strace, which sends SIGKILL at the `n`th call of one
/// of `calls` by any one thread; says whether prune was killed.
fn prune_killed_at(env: &Env, calls: &str, n: usize) -> bool {
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={calls}:signal=SIGKILL:when={n}"))
        .arg(util::BIN)
        .arg("-r")
        .arg(env.repo())
        .arg("-k")
        .arg(&env.keys.full)
        .args(["-q", "prune"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("STRONGROOM_CACHE_DIR", env.path("cache"))
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("strace (Debian package strace) runs");
    use std::os::unix::process::ExitStatusExt;
    match (out.status.code(), out.status.signal()) {
        (Some(0), _) => false,
        (_, Some(9)) | (Some(137), _) => true,
        _ => panic!(
            "prune neither finished nor was killed: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn a_prune_killed_at_any_moment_leaves_a_repository_that_checks_and_restores() {
    let env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    env.run(&["forget", "--keep-last", "2"]).ok();
    let baseline = env.path("baseline");
    sh(&format!("cp -a {} {}", env.repo().display(), baseline.display()));

    // Every object a prune writes is synced and renamed into place, and
    // every one it deletes is unlinked: a kill at each of those calls, in
    // turn, stops it in each state it passes through.
    let mut kills = 0;
    for calls in ["renameat,rename,renameat2", "unlink,unlinkat", "fsync,fdatasync"] {
        for n in 1.. {
            sh(&format!(
                "rm -rf {0} && cp -a {1} {0}",
                env.repo().display(),
                baseline.display()
            ));
            if !prune_killed_at(&env, calls, n) {
                break;
            }
            kills += 1;
            assert!(env.repo_objects("locks").len() <= 1);
            env.run(&["unlock", "--remove-all"]).ok();
            env.run(&["check", "--read-data"]).ok();
            for (state, id) in &gens[1..] {
                restores_as(&env, id, &src, state);
            }
            let done = env.run(&["--json", "prune"]).ok().json();
            assert_eq!(summary(&done, "unused_bytes_after"), 0, "{done}");
            env.run(&["check", "--read-data"]).ok();
            let again = env.run(&["--json", "prune"]).ok().json();
            assert_eq!(
                summary(&again, "bytes_freed"),
                0,
                "after a kill at {calls} #{n}: {again}"
            );
        }
    }
    eprintln!("prune was killed at {kills} points");
    assert!(kills >= 6, "prune was killed at only {kills} points");
}

fn remote_prune(env: &Env) {
    env.init();
    let (src, gens) = history(env);
    let out = env
        .run(&["--json", "forget", "--keep-last", "2", "--prune"])
        .ok()
        .json();
    assert_eq!(summary(&out["prune"], "packs_repacked"), 1, "{out}");
    assert!(summary(&out["prune"], "bytes_freed") >= 1 << 20, "{out}");
    env.run(&["check", "--read-data"]).ok();
    for (state, id) in &gens[1..] {
        restores_as(env, id, &src, state);
    }
    let again = env.run(&["--json", "prune"]).ok().json();
    assert_eq!(summary(&again, "bytes_freed"), 0, "{again}");
}

#[test]
fn prune_on_s3() {
    remote_prune(&Env::s3("prune"));
}

#[test]
fn prune_on_the_strongroom_server() {
    let mut env = Env::https("admin");
    remote_prune(&env);
    // The server's writer role may add but not delete: forget and prune,
    // even with the full key, are refused in one sentence.
    env.as_account("host");
    for args in [&["forget", "--keep-last", "1"][..], &["prune"][..]] {
        let r = env.run(args).fails(2);
        assert!(
            r.stderr().contains("append-only or read-only") && r.stderr().lines().count() == 1,
            "{}",
            r.stderr()
        );
    }
    env.run(&["forget", "--keep-last", "1", "--dry-run"]).ok();
}

#[test]
fn an_index_file_that_lies_about_a_packs_size_gets_the_pack_neither_deleted_nor_trusted() {
    use strongroom::format::index::PackEntries;
    use strongroom::repository::index;

    let env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    // A writer names every pack again, one byte longer and holding nothing.
    let key = strongroom::keys::load(&env.keys.writer, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend.clone(), key.shared()).unwrap();
    let lies: Vec<PackEntries> = env
        .repo_objects("packs")
        .iter()
        .map(|p| PackEntries {
            pack: strongroom::format::Id::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap(),
            size: std::fs::metadata(p).unwrap().len() + 1,
            blobs: Vec::new(),
        })
        .collect();
    let packs_before = env.repo_objects("packs");
    index::write_index_file(backend.as_ref(), &key.shared().subkeys, &repo.id(), lies).unwrap();

    // No copy is chosen from a pack whose size is in dispute: the blobs are
    // then nowhere intact, and prune stops before deleting anything.
    let r = env.run(&["forget", "--keep-last", "1", "--prune"]).fails(1);
    assert!(r.stderr().contains("prune deletes nothing"), "{}", r.stderr());
    assert_eq!(env.repo_objects("packs"), packs_before, "no pack deleted");
    env.run(&["repair", "index"]).ok();
    env.run(&["prune"]).ok();
    env.run(&["check", "--read-data"]).ok();
    restores_as(&env, &gens[2].1, &src, &gens[2].0);
}
