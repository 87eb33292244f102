//! `strongroom mount`: real FUSE mounts read with real tools.

mod util;

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use util::{BIN, Env, build_tricky_tree, sample, sh, under};

/// A running mount daemon: unmounted (lazily) and killed when dropped, so
/// a failed test leaves no mount behind.
struct Mounted {
    child: Option<Child>,
    at: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_mounted(at: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = at.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(at))
}

impl Mounted {
    /// Waits (at most 30 s) until the mount point is a FUSE mount that
    /// answers.
    fn wait(mut child: Child, at: &Path) -> Mounted {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if is_mounted(at) && std::fs::read_dir(at).is_ok() {
                return Mounted {
                    child: Some(child),
                    at: at.to_path_buf(),
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("the mount daemon exited ({status}) before mounting:\n{err}");
            }
            assert!(Instant::now() < deadline, "not mounted after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// Sends `signal` and waits (at most 30 s) for the daemon to exit;
    /// returns its exit code and stderr.
    fn stop(&mut self, signal: i32) -> (Option<i32>, String) {
        let pid = self.child().id() as i32;
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child().try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        self.child()
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code(), err)
    }
}

fn mount(env: &Env, at: &Path, extra: &[&str]) -> Mounted {
    std::fs::create_dir_all(at).unwrap();
    let mut args = vec!["mount", at.to_str().unwrap()];
    args.extend_from_slice(extra);
    Mounted::wait(env.spawn(&args), at)
}

fn output(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ls(p: &Path) -> Vec<String> {
    output(Command::new("ls").arg("-A").arg(p))
        .lines()
        .map(str::to_string)
        .collect()
}

fn readlink(p: &Path) -> String {
    std::fs::read_link(p).unwrap().to_str().unwrap().to_string()
}

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

fn rsync_differences(a: &Path, b: &Path) -> String {
    output(
        Command::new("rsync")
            .args(["-aHAXn", "--numeric-ids", "--checksum", "--itemize-changes"])
            .arg(format!("{}/", a.display()))
            .arg(format!("{}/", b.display())),
    )
}

/// `stat` of every entry under `root`: type and mode, owner, blocks, links,
/// device numbers, mtime in ns; sizes of all but directories (a
/// directory's size is its filesystem's business). Access times are left
/// out: reading the source for the backup moved them.
fn stat_lines(root: &Path) -> String {
    let script = format!(
        "cd {} && find . -print0 | sort -z | xargs -0 stat -c '%n %f %u %g %b %h %t:%T %y' \
         && find . ! -type d -print0 | sort -z | xargs -0 stat -c '%n %s'",
        root.display()
    );
    output(Command::new("sh").arg("-c").arg(script))
}

fn getfattr(root: &Path) -> String {
    let script = format!(
        "cd {} && getfattr -R -P -d -m - -e hex . 2>/dev/null | sort",
        root.display()
    );
    output(Command::new("sh").arg("-c").arg(script))
}

fn inode_of(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn tricky_tree_reads_through_the_mount_with_no_difference() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_tricky_tree(&src);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &["--snapshot", "latest"]);
    let seen = under(&at, &src);

    let diff = rsync_differences(&src, &seen);
    assert!(diff.is_empty(), "rsync reports differences:\n{diff}");
    assert_eq!(stat_lines(&src), stat_lines(&seen));
    assert_eq!(getfattr(&src), getfattr(&seen));
    for l in ["nonutf8-link", "long-link", "rel-link", "abs-link"] {
        assert_eq!(
            std::fs::read_link(src.join(l)).unwrap(),
            std::fs::read_link(seen.join(l)).unwrap()
        );
    }
    for f in ["sparse", "trailing-hole", "regular", "setuid"] {
        sh(&format!(
            "cmp {} {}",
            src.join(f).display(),
            seen.join(f).display()
        ));
    }
    let one = inode_of(&seen.join("links/a/one"));
    assert_eq!(one, inode_of(&seen.join("links/b/two")));
    assert_eq!(one, inode_of(&seen.join("links/three")));
    assert_eq!(std::fs::metadata(seen.join("links/three")).unwrap().nlink(), 3);
    let before: Vec<u64> = ["regular", "links/a/one", "names", "deep"]
        .iter()
        .map(|p| inode_of(&seen.join(p)))
        .collect();

    // cp -a out of the mount reproduces the tree.
    let out = env.path("copied");
    sh(&format!("cp -a {} {}", seen.display(), out.display()));
    let diff = rsync_differences(&src, &out);
    assert!(diff.is_empty(), "rsync reports differences after cp -a:\n{diff}");

    // The same inode numbers after a remount.
    let (code, _) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    drop(m);
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let after: Vec<u64> = ["regular", "links/a/one", "names", "deep"]
        .iter()
        .map(|p| inode_of(&seen.join(p)))
        .collect();
    assert_eq!(before, after);
}

fn errno_of(r: libc::c_int) -> i32 {
    if r >= 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

#[test]
fn every_write_operation_fails_with_erofs() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let dir = under(&at, &src);
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
    let (file, sub, new) = (
        c(&dir.join("hello.txt")),
        c(&dir.join("docs")),
        c(&dir.join("new")),
    );
    let name = CString::new("user.x").unwrap();
    // SAFETY: every pointer is a NUL-terminated string or buffer alive for
    // the call.
    let results = unsafe {
        [
            (
                "create",
                errno_of(libc::open(new.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644)),
            ),
            ("mkdir", errno_of(libc::mkdir(new.as_ptr(), 0o755))),
            (
                "mknod",
                errno_of(libc::mknod(new.as_ptr(), libc::S_IFIFO | 0o644, 0)),
            ),
            ("unlink", errno_of(libc::unlink(file.as_ptr()))),
            ("rmdir", errno_of(libc::rmdir(sub.as_ptr()))),
            ("rename", errno_of(libc::rename(file.as_ptr(), new.as_ptr()))),
            ("chmod", errno_of(libc::chmod(file.as_ptr(), 0o600))),
            ("chown", errno_of(libc::chown(file.as_ptr(), 1, 1))),
            ("truncate", errno_of(libc::truncate(file.as_ptr(), 0))),
            (
                "utimens",
                errno_of(libc::utimensat(
                    libc::AT_FDCWD,
                    file.as_ptr(),
                    std::ptr::null(),
                    0,
                )),
            ),
            (
                "setxattr",
                errno_of(libc::setxattr(
                    file.as_ptr(),
                    name.as_ptr(),
                    b"v".as_ptr().cast(),
                    1,
                    0,
                )),
            ),
            (
                "removexattr",
                errno_of(libc::removexattr(file.as_ptr(), name.as_ptr())),
            ),
            ("link", errno_of(libc::link(file.as_ptr(), new.as_ptr()))),
            ("symlink", errno_of(libc::symlink(file.as_ptr(), new.as_ptr()))),
            (
                "open for writing",
                errno_of(libc::open(file.as_ptr(), libc::O_WRONLY)),
            ),
            (
                "open read-write",
                errno_of(libc::open(file.as_ptr(), libc::O_RDWR)),
            ),
        ]
    };
    for (what, errno) in results {
        assert_eq!(errno, libc::EROFS, "{what} gave errno {errno}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(at.to_str().unwrap()))
        .unwrap();
    for opt in ["ro", "nosuid", "nodev"] {
        assert!(
            line.split(' ').nth(5).unwrap().split(',').any(|o| o == opt),
            "{line}"
        );
    }
    assert!(
        line.contains("default_permissions") && !line.contains("allow_other"),
        "{line}"
    );
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
    m.stop(libc::SIGKILL);
    let err = std::fs::metadata(&at).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let mut again = Mounted::wait(env.spawn(&["mount", at.to_str().unwrap()]), &at);
    assert_eq!(ls(&at), ["hosts", "ids", "snapshots", "tags"]);
    let (code, stderr) = again.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("was a dead mount"), "{stderr}");
}

#[test]
fn mount_point_inside_the_repository_is_refused() {
    let env = Env::new();
    two_snapshots(&env);
    let inside = env.repo().join("mnt");
    std::fs::create_dir_all(&inside).unwrap();
    let r = env.run(&["mount", inside.to_str().unwrap()]).fails(2);
    assert!(r.stderr().contains("inside the repository"), "{}", r.stderr());
    assert!(!is_mounted(&inside));
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
    let at = env.path("mnt");
    std::fs::create_dir_all(&at).unwrap();
    // No HOME or XDG variables, cwd /, no fusermount on PATH, and a cache
    // directory that cannot be made.
    let child = Command::new(BIN)
        .env_clear()
        .env("PATH", env.path("empty-bin"))
        .current_dir("/")
        .arg("-r")
        .arg(env.repo())
        .arg("-k")
        .arg(&env.keys.full)
        .args(["--cache-dir", "/proc/strongroom-cache"])
        .arg("mount")
        .arg(&at)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _m = Mounted::wait(child, &at);
    let blob = under(&at.join("snapshots/latest"), &src).join("docs/blob.bin");
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
fn a_directory_too_large_for_one_reply_lists_every_entry_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("entry-with-a-longish-name-{i:05}")), "").unwrap();
    }
    env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let seen = under(&at, &src);
    assert_eq!(ls(&seen), ls(&src));
    let find = output(
        Command::new("find")
            .arg(&seen)
            .args(["-mindepth", "1", "-printf", "%i\n"]),
    );
    let inodes: std::collections::BTreeSet<&str> = find.lines().collect();
    assert_eq!(inodes.len(), 3000, "every entry has its own inode number");
    // The kernel drops what it cached and forgets the inodes; they come
    // back under the same numbers.
    sh("sync; echo 2 > /proc/sys/vm/drop_caches");
    assert_eq!(ls(&seen), ls(&src));
    let again = output(
        Command::new("find")
            .arg(&seen)
            .args(["-mindepth", "1", "-printf", "%i\n"]),
    );
    assert_eq!(again.lines().collect::<std::collections::BTreeSet<_>>(), inodes);
    assert_eq!(
        std::fs::read(seen.join("entry-with-a-longish-name-01234")).unwrap(),
        b""
    );
}
