//! `strongroom mount`: the layout, faults and the daemon's lifecycle, on
//! real FUSE mounts read with real tools.

mod util;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use util::fuse::{Mounted, is_mounted, ls, mount, readlink, statfs_errno};
use util::{BIN, Env, sample, sh, under};

/// Two hosts, two snapshots, tags; returns (older id, newer id).
fn two_snapshots(env: &Env) -> (String, String) {
    env.init();
    let src = sample(env);
    let s = src.to_str().unwrap();
    env.run(&[
        "backup",
        "--host",
        "alpha",
        "--tag",
        "daily",
        "--time",
        "2024-03-05T10:00:00Z",
        s,
    ])
    .ok();
    env.run(&[
        "backup",
        "--host",
        "beta",
        "--tag",
        "weekly",
        "--time",
        "2024-03-12T09:30:00Z",
        s,
    ])
    .ok();
    let snaps = env.snapshots();
    let id = |i: usize| snaps[i]["id"].as_str().unwrap().to_string();
    (id(0), id(1))
}

#[test]
fn layout_shows_snapshots_ids_hosts_tags_and_latest() {
    let env = Env::new();
    let (old, new) = two_snapshots(&env);
    let at = env.path("mnt");
    let m = mount(&env, &at, &[]);
    assert_eq!(ls(&at), ["hosts", "ids", "snapshots", "tags"]);
    assert_eq!(
        ls(&at.join("snapshots")),
        ["2024-03-05T10:00:00Z", "2024-03-12T09:30:00Z", "latest"]
    );
    assert_eq!(readlink(&at.join("snapshots/latest")), "2024-03-12T09:30:00Z");
    let mut ids = ls(&at.join("ids"));
    ids.sort();
    let mut want = vec![old[..8].to_string(), new[..8].to_string()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(ls(&at.join("hosts")), ["alpha", "beta"]);
    assert_eq!(ls(&at.join("hosts/alpha")), ["2024-03-05T10:00:00Z", "latest"]);
    assert_eq!(
        readlink(&at.join("hosts/beta/latest")),
        "../../snapshots/2024-03-12T09:30:00Z"
    );
    assert_eq!(ls(&at.join("tags")), ["daily", "weekly"]);
    assert_eq!(
        readlink(&at.join("tags/daily/2024-03-05T10:00:00Z")),
        "../../snapshots/2024-03-05T10:00:00Z"
    );
    // Virtual directories carry the newest snapshot's time.
    assert_eq!(std::fs::metadata(at.join("tags")).unwrap().mtime(), 1710235800);
    let src = env.path("src");
    let through = |p: &str| under(&at.join(p), &src).join("hello.txt");
    for p in [
        "snapshots/latest",
        "hosts/alpha/latest",
        &format!("ids/{}", &old[..8]),
    ] {
        assert_eq!(std::fs::read(through(p)).unwrap(), b"hello, strongroom\n", "{p}");
    }
    drop(m);

    let one = env.path("one");
    let _m = mount(&env, &one, &["--snapshot", &old[..8]]);
    sh(&format!(
        "diff -r --no-dereference {} {}",
        src.display(),
        under(&one, &src).display()
    ));
}

#[test]
fn a_lost_pack_is_eio_for_its_file_only_and_reads_again_once_back() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("small"), "small and safe\n").unwrap();
    env.backup(&[&src]);
    util::random_file(&src.join("big"), 3 << 20, 11);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &["--snapshot", "latest"]);
    let dir = under(&at, &src);
    assert_eq!(ls(&dir), ["big", "small"]);
    let (pack, name) = env.largest_pack();
    let aside = env.path("aside");
    std::fs::rename(&pack, &aside).unwrap();
    let err = std::fs::read(dir.join("big")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(std::fs::read(dir.join("small")).unwrap(), b"small and safe\n");
    std::fs::rename(&aside, &pack).unwrap();
    assert_eq!(
        std::fs::read(dir.join("big")).unwrap(),
        std::fs::read(src.join("big")).unwrap()
    );
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&name) && stderr.contains("/big"), "{stderr}");
}

#[test]
fn sigterm_unmounts_and_exits_0() {
    let env = Env::new();
    two_snapshots(&env);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &[]);
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!is_mounted(&at));
    assert!(stderr.contains("mounted 2 snapshots at"), "{stderr}");
}

#[test]
fn a_dead_mount_left_by_sigkill_is_cleaned_up_by_the_next_mount() {
    let env = Env::new();
    two_snapshots(&env);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &[]);
    // The root's attributes are seen, and the kernel keeps them: a stat
    // still answers once the daemon is gone, only statfs shows it dead.
    std::fs::metadata(&at).unwrap();
    m.stop(libc::SIGKILL);
    std::fs::metadata(&at).unwrap();
    assert_eq!(statfs_errno(&at), libc::ENOTCONN);
    let mut again = Mounted::wait(env.spawn(&["mount", at.to_str().unwrap()]), &at);
    assert_eq!(ls(&at), ["hosts", "ids", "snapshots", "tags"]);
    let (code, stderr) = again.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("was a dead mount"), "{stderr}");
}

#[test]
fn mount_point_inside_the_repository_or_the_cache_is_refused() {
    let env = Env::new();
    two_snapshots(&env);
    for (inside, what) in [
        (env.repo().join("mnt"), "inside the repository"),
        (env.path("cache").join("mnt"), "inside the cache directory"),
    ] {
        std::fs::create_dir_all(&inside).unwrap();
        let r = env.run(&["mount", inside.to_str().unwrap()]).fails(2);
        assert!(r.stderr().contains(what), "{}", r.stderr());
        assert!(!is_mounted(&inside));
    }
}

#[test]
fn writer_key_cannot_mount() {
    let env = Env::new();
    two_snapshots(&env);
    let at = env.path("mnt");
    std::fs::create_dir_all(&at).unwrap();
    let r = env.writer(&["mount", at.to_str().unwrap()]).fails(2);
    assert!(r.stderr().contains("writer key"), "{}", r.stderr());
}

#[test]
fn mounts_from_a_rescue_shell_environment() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    // No HOME or XDG variables, cwd /, no fusermount on PATH, and a cache
    // directory that cannot be made.
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", env.path("empty-bin"))
        .current_dir("/");
    let _m = bare_mount(cmd, &env, &env.repo(), Path::new("/proc/strongroom-cache"));
    reads_back(&env, &src);
}

/// Mounts `repo` at `mnt` with the full key and cache directory `cache`,
/// through `cmd` (the binary, its environment set), as a rescue shell
/// would: nothing from the test's own environment.
fn bare_mount(mut cmd: Command, env: &Env, repo: &Path, cache: &Path) -> Mounted {
    let at = env.path("mnt");
    std::fs::create_dir_all(&at).unwrap();
    let child = cmd
        .arg("-r")
        .arg(repo)
        .arg("-k")
        .arg(&env.keys.full)
        .arg("--cache-dir")
        .arg(cache)
        .arg("mount")
        .arg(&at)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    Mounted::wait(child, &at)
}

/// The sample's `docs/blob.bin` reads back identical through the mount.
fn reads_back(env: &Env, src: &Path) {
    let blob = under(&env.path("mnt/snapshots/latest"), src).join("docs/blob.bin");
    assert_eq!(
        std::fs::read(blob).unwrap(),
        std::fs::read(src.join("docs/blob.bin")).unwrap()
    );
}

#[test]
fn unverifiable_snapshots_and_unusable_names_are_left_out_with_a_warning() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let s = src.to_str().unwrap();
    env.run(&["backup", "--host", "a/b", "--tag", "..", "--tag", "fine", s])
        .ok();
    env.run(&["backup", "--time", "2020-01-01T00:00:00Z", s]).ok();
    let snaps = env.snapshots();
    let old = snaps[0]["id"].as_str().unwrap().to_string();
    // The older snapshot's manifest is damaged: it no longer verifies.
    let manifest = env.repo().join("snapshots").join(&old);
    let len = std::fs::metadata(&manifest).unwrap().len();
    util::flip_byte(&manifest, len / 2);
    // (A client that verified it before would keep what it verified.)
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &[]);
    assert_eq!(ls(&at.join("snapshots")).len(), 2, "one snapshot and latest");
    assert_eq!(ls(&at.join("ids")).len(), 1);
    assert!(ls(&at.join("hosts")).is_empty());
    assert_eq!(ls(&at.join("tags")), ["fine"]);
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.matches(&format!("snapshot {old} is left out")).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("\"a/b\"") && stderr.contains("\"..\""),
        "{stderr}"
    );
}

#[test]
fn the_mount_holds_a_shared_lock_so_removing_data_waits_until_it_is_gone() {
    let env = Env::new();
    two_snapshots(&env);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &[]);
    // Readers share: another restore runs beside the mount.
    env.run(&["restore", "latest", "--target", env.path("out").to_str().unwrap()])
        .ok();
    // What takes an exclusive lock (it may remove data) is turned away.
    let r = env.run(&["repair", "index"]).fails(1);
    assert!(r.stderr().contains("in use"), "{}", r.stderr());
    assert!(r.stderr().contains("mount"), "{}", r.stderr());
    let (code, _) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    assert!(!is_mounted(&at));
    // Unmounted, the lock is gone.
    env.run(&["repair", "index"]).ok();
}

/// Unmounts (lazily) a bind mount the test made, whatever happens.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_repository_that_cannot_be_written_mounts_without_a_lock() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    // Read-only even for root: a read-only bind mount of the repository.
    let ro = env.path("ro-repo");
    std::fs::create_dir_all(&ro).unwrap();
    sh(&format!(
        "mount --bind {r} {ro} && mount -o remount,ro,bind {ro}",
        r = env.repo().display(),
        ro = ro.display()
    ));
    let _bind = BindMount(ro.clone());
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    let mut m = bare_mount(cmd, &env, &ro, &env.path("cache"));
    reads_back(&env, &src);
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("mounting without a lock"), "{stderr}");
}
