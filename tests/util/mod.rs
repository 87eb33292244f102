//! Drives the real `strongroom` binary in a fresh temporary directory with
//! a cleared environment. Key files are made once per build and shared.
#![allow(dead_code)]

pub mod fidelity;
pub mod fuse;
pub mod garage;
pub mod server;

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");

/// Shared key files, made once (under a lock, across test processes).
pub struct Keys {
    pub full: PathBuf,
    pub writer: PathBuf,
    pub other: PathBuf,
}

pub fn keys() -> Keys {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-keys-v3");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.join(".lock")).unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` drops.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let k = Keys {
        full: dir.join("full.key"),
        writer: dir.join("writer.key"),
        other: dir.join("other.key"),
    };
    let run = |args: &[&OsStr]| {
        let o = Command::new(BIN).args(args).env_clear().output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    for (p, _) in [(&k.full, 0), (&k.other, 1)] {
        if !p.exists() {
            let tmp = p.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            run(&[
                "keygen".as_ref(),
                "--no-passphrase".as_ref(),
                "--bits".as_ref(),
                "3072".as_ref(),
                "--out".as_ref(),
                tmp.as_os_str(),
            ]);
            std::fs::rename(&tmp, p).unwrap();
        }
    }
    if !k.writer.exists() {
        let tmp = k.writer.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        run(&[
            "-k".as_ref(),
            k.full.as_os_str(),
            "key".as_ref(),
            "export-writer".as_ref(),
            "--host".as_ref(),
            "writer-host".as_ref(),
            "--no-passphrase".as_ref(),
            "--bits".as_ref(),
            "3072".as_ref(),
            "--out".as_ref(),
            tmp.as_os_str(),
        ]);
        std::fs::rename(&tmp, &k.writer).unwrap();
    }
    k
}

/// A test's sandbox: a temporary directory with a repository path, a cache
/// directory and the shared keys.
pub struct Env {
    /// A strongroom server the repository is on (stopped first on drop).
    pub server: Option<server::Server>,
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    /// The repository's URL when it is not the local `repo` directory,
    /// with the environment its client needs.
    pub remote: Option<(String, Vec<(String, String)>)>,
}

pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code(),
            0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn fails(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout(), self.stderr()))
    }
}

impl Env {
    pub fn new() -> Env {
        let keys = keys();
        let dir = tempfile::Builder::new()
            .prefix("t-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        Env {
            server: None,
            dir,
            keys,
            remote: None,
        }
    }

    /// A sandbox any user can reach wherever the checkout sits (for tests
    /// that run the binary as another user): a fresh directory under
    /// /tmp, mode 0755, removed at the end.
    pub fn reachable() -> Env {
        use std::os::unix::fs::PermissionsExt;
        let keys = keys();
        let dir = tempfile::Builder::new()
            .prefix("strongroom-t-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Env {
            server: None,
            dir,
            keys,
            remote: None,
        }
    }

    /// A sandbox whose repository is a fresh prefix of the test bucket of
    /// a real S3 server (Garage, on loopback).
    pub fn s3(test: &str) -> Env {
        let mut env = Env::new();
        let vars = garage::client_env()
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        env.remote = Some((garage::repo_url(test), vars));
        env
    }

    /// A sandbox whose repository is `r` on a strongroom server of its own
    /// (a `--data` directory in the sandbox), reached as `account`.
    pub fn https(account: &str) -> Env {
        let mut env = Env::new();
        let server = server::Server::on_data(&env.path("server-data"));
        env.remote = Some((server.url(account, "r"), server.client_env(account)));
        env.server = Some(server);
        env
    }

    /// The same sandbox reached as another account of its server.
    pub fn as_account(&mut self, account: &str) {
        let s = self.server.as_ref().expect("a server");
        self.remote = Some((s.url(account, "r"), s.client_env(account)));
    }

    pub fn server(&self) -> &server::Server {
        self.server.as_ref().expect("a server")
    }

    /// What `-r` takes: the remote URL, else the local `repo` directory.
    pub fn repo_arg(&self) -> std::ffi::OsString {
        match &self.remote {
            Some((url, _)) => url.into(),
            None => self.repo().into(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// A command with a cleared environment, run in the sandbox.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("STRONGROOM_CACHE_DIR", self.path("cache"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some((_, vars)) = &self.remote {
            c.envs(vars.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        }
        c
    }

    /// Runs with `-r repo -k KEY` and the given arguments.
    pub fn run_with(&self, key: &Path, args: &[&str]) -> Run {
        self.run_at(&self.repo_arg(), key, args)
    }

    /// Runs with `-r REPO -k KEY` (another repository) and the arguments.
    pub fn run_at(&self, repo: &OsStr, key: &Path, args: &[&str]) -> Run {
        let out = self
            .cmd()
            .arg("-r")
            .arg(repo)
            .arg("-k")
            .arg(key)
            .args(args)
            .output()
            .unwrap();
        Run { out }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(&self.keys.full, args)
    }

    pub fn writer(&self, args: &[&str]) -> Run {
        self.run_with(&self.keys.writer, args)
    }

    /// Starts `-r repo -k FULLKEY args…` without waiting, output captured.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd()
            .arg("-r")
            .arg(self.repo_arg())
            .arg("-k")
            .arg(&self.keys.full)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn init(&self) {
        self.run(&["init"]).ok();
    }

    /// Backs up `paths` and returns the JSON summary.
    pub fn backup(&self, paths: &[&Path]) -> serde_json::Value {
        let mut args = vec!["--json".to_string(), "backup".to_string()];
        args.extend(paths.iter().map(|p| p.to_str().unwrap().to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&a).ok().json()
    }

    /// Restores `spec` into a new directory and checks with `diff -r` that
    /// `src` came back as it is now; returns the restore target.
    pub fn restore_matches(&self, spec: &str, src: &Path) -> PathBuf {
        let target = tempfile::Builder::new()
            .prefix("out-")
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep();
        sh(&format!("chmod 750 {}", target.display()));
        self.run(&["restore", spec, "--target", target.to_str().unwrap()])
            .ok();
        sh(&format!(
            "diff -r --no-dereference {} {}",
            src.display(),
            under(&target, src).display()
        ));
        target
    }

    pub fn snapshots(&self) -> serde_json::Value {
        self.run(&["--json", "snapshots"]).ok().json()
    }

    /// Every file in the repository, with its bytes.
    pub fn repo_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        files_under(&self.repo())
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }

    /// The objects of one kind (`packs`, `keys`, …), sorted.
    pub fn repo_objects(&self, kind: &str) -> Vec<PathBuf> {
        let mut v = files_under(&self.repo().join(kind));
        v.sort();
        v
    }

    /// The largest pack, and its name.
    pub fn largest_pack(&self) -> (PathBuf, String) {
        let packs = self.repo_objects("packs");
        let p = packs
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        (p, name)
    }
}

/// Where a backed-up absolute path lands under a restore target.
pub fn under(target: &Path, abs: &Path) -> PathBuf {
    target.join(abs.strip_prefix("/").unwrap())
}

/// The counts a command run with `-v` tells in its `opened N blobs from M
/// pack reads and K disk cache entries` line: (N, M, K).
pub fn opened(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("opened "))
        .unwrap_or_else(|| panic!("no counts in:\n{stderr}"));
    let n: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    match n[..] {
        [blobs, reads, cached] => (blobs, reads, cached),
        _ => panic!("not three counts: {line}"),
    }
}

pub fn sh(script: &str) {
    let o = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(
        o.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Writes `n` pseudo-random bytes (xorshift, seeded) to `path`.
pub fn random_file(path: &Path, n: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = vec![0u8; n];
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
    std::fs::write(path, buf).unwrap();
}

pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
}

/// A small source tree: text, a deep directory, 3 MiB of random bytes, a symlink.
pub fn sample(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs/deep")).unwrap();
    std::fs::write(src.join("hello.txt"), "hello, strongroom\n").unwrap();
    std::fs::write(src.join("docs/deep/notes.md"), "# notes\n".repeat(1000)).unwrap();
    random_file(&src.join("docs/blob.bin"), 3 << 20, 7);
    std::os::unix::fs::symlink("hello.txt", src.join("link")).unwrap();
    src
}

/// A tmpfs mounted for a test, unmounted when dropped (on every path, so a
/// failed test leaves no mount behind).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={size} strongroom-test {}",
            at.display()
        ));
        Tmpfs(at.to_path_buf())
    }

    /// Gives the mounted tmpfs a new size, keeping what it holds.
    pub fn resize(&self, size: &str) {
        sh(&format!("mount -o remount,size={size} {}", self.0.display()));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every regular file below `dir` (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// Builds the tricky tree at `root` (as root: devices, owners, trusted xattrs).
pub fn build_tricky_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let r = root.display();
    sh(&format!(
        r#"
cd {r}
echo regular > regular
: > empty
# Sparse: 64 MiB with three written blocks, and a file ending in a hole.
truncate -s 64M sparse
printf 'start' | dd of=sparse bs=1 conv=notrunc status=none
printf 'middle' | dd of=sparse bs=1 seek=20971520 conv=notrunc status=none
printf 'end' | dd of=sparse bs=1 seek=67108000 conv=notrunc status=none
printf 'head' > trailing-hole && truncate -s 10M trailing-hole
# Hard links across directories.
mkdir -p links/a links/b
echo linked > links/a/one
ln links/a/one links/b/two
ln links/a/one links/three
# Symlinks.
ln -s regular rel-link
ln -s /etc/passwd abs-link
ln -s does/not/exist dangling
ln -s "$(printf 'tar\377get\001')" nonutf8-link
ln -s "$(head -c 3000 /dev/zero | tr '\0' 'x')" long-link
# Special files.
mkfifo fifo
mknod chardev c 1 3
mknod blockdev b 7 200
# Modes.
echo s > setuid && chmod 4755 setuid
echo g > setgid && chmod 2755 setgid
mkdir sticky && chmod 1777 sticky
echo z > mode000 && chmod 000 mode000
mkdir dir000 && echo inside > dir000/f
# Owners nobody has here.
echo o > foreign && chown 12345:54321 foreign
ln -s regular foreign-link && chown -h 23456:65432 foreign-link
# Times: nanoseconds, before 1970, far future.
echo t > nanos && touch -d '2021-06-01 12:34:56.123456789' nanos
echo t > old && touch -d '1960-01-01 00:00:00.5' old
echo t > future && touch -d '2200-01-01 00:00:00' future
touch -h -d '2001-02-03 04:05:06.7' rel-link
# Extended attributes: user on a file and a directory, trusted on a symlink.
echo x > xattrs && setfattr -n user.comment -v 'hello' xattrs && setfattr -n user.bin -v 0x00ff00 xattrs
mkdir xdir && setfattr -n user.dirattr -v 'on a dir' xdir
setfattr -h -n trusted.linkattr -v 'on a link' rel-link
# POSIX ACLs, a default ACL among them.
echo a > acl && setfacl -m u:1234:rwx,g:4321:r acl
mkdir acldir && setfacl -m u:1234:rx acldir && setfacl -d -m u:1234:rwx,g::r acldir
echo inherits > acldir/child
# Awkward names.
mkdir names
echo n > "names/$(printf 'caf\351')"
echo n > "names/$(head -c 255 /dev/zero | tr '\0' 'n')"
echo n > "names/$(printf 'new\nline')"
echo n > "names/-dash"
# Deep nesting.
d=deep; for i in $(seq 1 60); do d=$d/d$i; done; mkdir -p $d && echo bottom > $d/file
chmod 000 dir000
touch -d '2010-10-10 10:10:10.101010101' links sticky xdir names
"#
    ));
}

/// Three nightly generations of a tree, each copied aside as it was:
/// half a MiB files come and go, small files change. Returns the source
/// path and the copies, oldest first, with their snapshot ids.
pub fn history(env: &Env) -> (PathBuf, Vec<(PathBuf, String)>) {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..8 {
        // Odd seeds: random_file sets the lowest bit.
        random_file(&src.join(format!("big{i}")), 512 << 10, 101 + 2 * i);
    }
    for i in 0..60 {
        std::fs::write(
            src.join(format!("small/t{i}")),
            format!("file {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    let mut gens = Vec::new();
    let mut snap = |n: usize, env: &Env| {
        let time = format!("2026-01-0{n}T00:30:00Z");
        let s = src.to_str().unwrap();
        let out = env.run(&["--json", "backup", "--time", &time, s]).ok().json();
        let copy = env.path(&format!("state{n}"));
        sh(&format!("cp -a {s} {}", copy.display()));
        gens.push((copy, out["snapshot_id"].as_str().unwrap().to_string()));
    };
    snap(1, env);
    for f in ["big0", "big1"] {
        std::fs::remove_file(src.join(f)).unwrap();
    }
    for i in 0..20 {
        std::fs::remove_file(src.join(format!("small/t{i}"))).unwrap();
    }
    random_file(&src.join("new0"), 512 << 10, 200);
    snap(2, env);
    std::fs::remove_file(src.join("big2")).unwrap();
    std::fs::write(src.join("small/t30"), "changed\n").unwrap();
    snap(3, env);
    (src, gens)
}

/// Restores `spec` and compares it with the copy of how `src` was.
pub fn restores_as(env: &Env, spec: &str, src: &Path, state: &Path) {
    let target = tempfile::Builder::new()
        .prefix("out-")
        .tempdir_in(env.dir.path())
        .unwrap();
    env.run(&["restore", spec, "--target", target.path().to_str().unwrap()])
        .ok();
    fidelity::no_differences(state, &under(target.path(), src));
}

/// The ids in a `--json snapshots` listing, in its order.
pub fn snapshot_ids(listing: &serde_json::Value) -> Vec<String> {
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}
