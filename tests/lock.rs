//! Repository locks: an exclusive lock keeps others out, a stale one does
//! not, and a finished command leaves none behind.

mod util;

use std::sync::Arc;

use strongroom::format::lock::Lock;
use strongroom::format::{FORMAT_VERSION, Timestamp};
use strongroom::repository::{Repository, lock};
use util::{Env, sample};

fn plant(env: &Env, exclusive: bool, age_secs: i64) -> String {
    let key = strongroom::keys::load(&env.keys.full, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend, key.shared()).unwrap();
    let then = Timestamp {
        sec: Timestamp::now().sec - age_secs,
        nsec: 0,
    };
    let l = Lock {
        format: FORMAT_VERSION,
        host: "other-host".into(),
        pid: 4242,
        exclusive,
        purpose: "prune".into(),
        created: then,
        refreshed: then,
    };
    lock::write(&repo, &key.shared().subkeys.index, &l).unwrap()
}

#[test]
fn an_exclusive_lock_keeps_backups_out_until_it_goes_stale() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    assert!(
        env.repo_objects("locks").is_empty(),
        "a finished backup leaves no lock"
    );

    let held = plant(&env, true, 10);
    let envelopes = env.repo_objects("keys").len();
    let r = env.run(&["backup", src.to_str().unwrap()]).fails(1);
    assert!(
        r.stderr()
            .contains("the repository is in use: an exclusive lock of host other-host (pid 4242, prune)"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        env.repo_objects("keys").len(),
        envelopes,
        "a refused backup writes nothing"
    );
    env.run(&["check"]).fails(1);
    std::fs::remove_file(env.repo().join("locks").join(&held)).unwrap();

    // A shared lock (another backup running) is no obstacle.
    plant(&env, false, 10);
    env.backup(&[&src]);
    // Nor is an exclusive lock nobody has refreshed for an hour.
    plant(&env, true, 3600);
    env.backup(&[&src]);
    env.restore_matches("latest", &src);
    assert_eq!(
        env.repo_objects("locks").len(),
        2,
        "only the planted locks remain"
    );
}

fn open_repo(env: &Env, key: &std::path::Path) -> (strongroom::keys::Key, Repository) {
    let key = strongroom::keys::load(key, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend, key.shared()).unwrap();
    (key, repo)
}

/// Writes a lock made with `key_file`'s own subkey, as any holder of it can.
fn forge(
    env: &Env,
    key_file: &std::path::Path,
    host: &str,
    pid: u32,
    exclusive: bool,
    at: Timestamp,
) -> String {
    let (key, repo) = open_repo(env, key_file);
    let l = Lock {
        format: FORMAT_VERSION,
        host: host.into(),
        pid,
        exclusive,
        purpose: "prune".into(),
        created: at,
        refreshed: at,
    };
    lock::write(&repo, &key.shared().subkeys.index, &l).unwrap()
}

const YEAR_9999: Timestamp = Timestamp {
    sec: 253_383_811_200,
    nsec: 0,
};

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_writer_key_lock_dated_9999_blocks_naming_itself_until_unlock_remove_all() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let name = forge(&env, &env.keys.writer, "writer-host", 4242, true, YEAR_9999);
    let r = env.run(&["backup", src.to_str().unwrap()]).fails(1);
    for part in [
        "an exclusive lock of host writer-host (pid 4242, prune)",
        "9999-06-01T00:00:00Z",
        name.as_str(),
        "strongroom unlock",
        "--remove-all",
    ] {
        assert!(r.stderr().contains(part), "{part}: {}", r.stderr());
    }
    // Plain `unlock` leaves a lock it has not seen go stale.
    let r = env.run(&["--json", "unlock"]).ok();
    assert_eq!(r.json()["removed"], 0);
    env.run(&["check"]).fails(1);
    // A writer key may not remove every lock.
    let r = env.writer(&["unlock", "--remove-all"]).fails(2);
    assert!(r.stderr().contains("this is a writer key"), "{}", r.stderr());
    assert_eq!(env.repo_objects("locks").len(), 1);

    let r = env.run(&["unlock", "--remove-all"]).ok();
    assert!(r.stdout().contains("removed 1 lock(s)"), "{}", r.stdout());
    assert!(env.repo_objects("locks").is_empty());
    env.backup(&[&src]);
}

#[test]
fn a_lock_first_seen_31_minutes_ago_no_longer_blocks_and_unlock_removes_it() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let name = forge(&env, &env.keys.writer, "writer-host", 4242, true, YEAR_9999);
    env.run(&["backup", src.to_str().unwrap()]).fails(1);

    // This client saw the lock first 31 minutes ago.
    let (key, repo) = open_repo(&env, &env.keys.full);
    let cache = strongroom::cache::Cache::open(Some(&env.path("cache")));
    let mut seen = lock::first_seen(&cache, &key.shared().subkeys, &repo.id());
    assert!(seen.contains_key(&name), "{seen:?}");
    seen.insert(name.clone(), Timestamp::now().sec - 31 * 60);
    lock::save_first_seen(&cache, &key.shared().subkeys, &repo.id(), &seen);

    env.backup(&[&src]);
    env.run(&["check"]).ok();
    let r = env.run(&["--json", "unlock"]).ok();
    assert_eq!(r.json()["removed"], 1);
    assert!(env.repo_objects("locks").is_empty());
}

#[test]
fn a_lock_of_this_host_whose_process_died_is_removed_by_the_next_backup() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    forge(
        &env,
        &env.keys.full,
        &strongroom::hostname(),
        dead_pid(),
        true,
        Timestamp::now(),
    );
    // Another host's lock with the same dead pid is not this host's to judge.
    let theirs = forge(
        &env,
        &env.keys.full,
        "other-host",
        dead_pid(),
        false,
        Timestamp::now(),
    );
    env.backup(&[&src]);
    assert_eq!(
        env.repo_objects("locks"),
        vec![env.repo().join("locks").join(theirs)]
    );
}

#[test]
fn a_temporary_file_of_a_dead_process_of_this_host_is_removed_by_the_next_backup() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let host: String = strongroom::hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tmp = env.repo().join("tmp");
    let dead = tmp.join(format!(".write-{host}-{}-x", dead_pid()));
    let alive = tmp.join(format!(".write-{host}-{}-y", std::process::id()));
    let other = tmp.join(format!(".write-other_host-{}-z", dead_pid()));
    for f in [&dead, &alive, &other] {
        std::fs::write(f, "half a pack").unwrap();
    }
    env.backup(&[&src]);
    assert!(!dead.exists(), "the dead process's file is removed");
    assert!(alive.exists() && other.exists(), "the others are left");
}

#[test]
fn an_interrupted_backup_removes_its_lock_and_temporaries_and_exits_130() {
    let env = Env::new();
    env.init();
    let big = env.path("big");
    std::fs::create_dir(&big).unwrap();
    util::random_file(&big.join("random.bin"), 600 << 20, 11);
    let mut child = env.spawn(&["backup", big.to_str().unwrap()]);
    let writing = |env: &Env| {
        !env.repo_objects("locks").is_empty()
            && (!env.repo_objects("packs").is_empty()
                || std::fs::read_dir(env.repo().join("tmp"))
                    .unwrap()
                    .next()
                    .is_some())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !writing(&env) {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never started writing"
        );
        assert!(child.try_wait().unwrap().is_none(), "the backup ended early");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: signalling our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let r = util::Run { out }.fails(130);
    assert!(r.stderr().contains("interrupted"), "{}", r.stderr());
    assert!(env.repo_objects("locks").is_empty(), "the lock was removed");
    let left: Vec<_> = std::fs::read_dir(env.repo().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    let src = sample(&env);
    env.backup(&[&src]);
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn a_lock_from_the_future_does_not_block_a_client_without_a_cache_directory() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    forge(&env, &env.keys.writer, "writer-host", 4242, true, YEAR_9999);
    // As a systemd unit or a rescue shell runs it: no usable cache
    // directory, so nothing could ever remember when the lock was seen.
    std::fs::write(env.path("not-a-dir"), "x").unwrap();
    let out = env
        .cmd()
        .env("STRONGROOM_CACHE_DIR", env.path("not-a-dir"))
        .arg("-r")
        .arg(env.repo())
        .arg("-k")
        .arg(&env.keys.full)
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    let r = util::Run { out }.ok();
    assert!(r.stderr().contains("without a cache"), "{}", r.stderr());
}
