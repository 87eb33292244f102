//! The rescue day: one static binary (`packaging/static.sh`) and a key file
//! in an otherwise empty root (`/dev/fuse`, `/proc`, `/tmp`: no shell, no
//! libc, no `fusermount`, no home, no configuration), `chroot` into it,
//! mount the newest snapshot, and read the files back through the mount:
//! from a repository placed inside, and over HTTPS from a strongroom server
//! on loopback, with the CA carried in the key file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Env};

use super::{ok, packaging_script};

/// The static binary, built once per test process.
fn static_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let bin = packaging_script("static.sh", &[], &[]);
        let headers = ok("readelf", &["--program-headers", bin.to_str().unwrap()]);
        assert!(
            !headers.contains("INTERP"),
            "{} asks for a dynamic loader",
            bin.display()
        );
        let dynamic = ok("readelf", &["--dynamic", bin.to_str().unwrap()]);
        assert!(
            !dynamic.contains("NEEDED"),
            "{} needs shared libraries:\n{dynamic}",
            bin.display()
        );
        bin
    })
}

/// An empty root with only what a rescue system offers: `/dev/fuse` (bound
/// from the host's), `/proc`, `/tmp` and a mount point. Everything it
/// mounted is unmounted when dropped, the mount daemon killed first.
struct Rescue {
    root: PathBuf,
    daemon: Option<Child>,
    mounts: Vec<PathBuf>,
}

impl Rescue {
    fn new(root: &Path) -> Rescue {
        for d in ["dev", "proc", "tmp", "mnt"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut r = Rescue {
            root: root.to_path_buf(),
            daemon: None,
            mounts: Vec::new(),
        };
        let fuse = root.join("dev/fuse");
        std::fs::write(&fuse, b"").unwrap();
        ok("mount", &["--bind", "/dev/fuse", fuse.to_str().unwrap()]);
        r.mounts.push(fuse);
        let proc = root.join("proc");
        ok("mount", &["-t", "proc", "proc", proc.to_str().unwrap()]);
        r.mounts.push(proc);
        std::fs::copy(static_binary(), root.join("strongroom")).unwrap();
        r
    }

    /// Starts `chroot ROOT /strongroom ARGS… mount --snapshot latest /mnt`
    /// with only `envs` in its environment; waits for the first byte of
    /// `file` (a path inside the snapshot) and returns the time it took.
    fn mount(&mut self, args: &[&str], envs: &[(&str, &str)], file: &Path) -> Duration {
        let at = self.root.join("mnt");
        let start = Instant::now();
        let child = Command::new("/usr/sbin/chroot")
            .arg(&self.root)
            .arg("/strongroom")
            .args(args)
            .args(["mount", "--snapshot", "latest", "/mnt"])
            .env_clear()
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Unmounted and killed by the guard from here on, whatever happens.
        self.mounts.push(at.clone());
        let child = self.daemon.insert(child);
        let through = util::under(&at, file);
        let deadline = start + Duration::from_secs(60);
        let mut byte = [0u8; 1];
        loop {
            let read = std::fs::File::open(&through).and_then(|mut f| f.read(&mut byte));
            if matches!(read, Ok(1)) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("the mount in the chroot exited ({status}):\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "no byte of {} after 60 s",
                through.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        start.elapsed()
    }

    /// Asks the mount to end as Ctrl-C does; it unmounts and exits 0.
    fn unmount(&mut self) {
        let mut child = self.daemon.take().unwrap();
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let status = child.wait().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "the mount exited with {status}:\n{err}");
        let at = self.mounts.last().unwrap();
        assert!(!util::fuse::is_mounted(at), "{} still mounted", at.display());
        self.mounts.pop();
    }
}

impl Drop for Rescue {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A tree worth copying back: one large file and a few small ones.
fn machine(env: &Env) -> (PathBuf, PathBuf) {
    let data = env.path("machine");
    std::fs::create_dir_all(data.join("etc")).unwrap();
    let large = data.join("var-lib-db.dump");
    util::random_file(&large, 64 << 20, 7);
    for i in 0..20 {
        util::random_file(
            &data.join(format!("etc/file-{i}")),
            1000 + i * 300,
            100 + i as u64,
        );
    }
    (data, large)
}

/// Every file of `data`, read back through the mount, byte for byte.
fn compare_through(at: &Path, data: &Path) {
    let files = util::files_under(data);
    assert!(files.len() >= 21);
    for f in files {
        let want = std::fs::read(&f).unwrap();
        let got = std::fs::read(util::under(at, &f)).unwrap();
        assert!(got == want, "{} differs through the mount", f.display());
    }
}

#[test]
fn the_static_binary_alone_in_an_empty_chroot_mounts_the_newest_snapshot() {
    let bin = static_binary();
    let size = std::fs::metadata(bin).unwrap().len();
    eprintln!(
        "static binary: {} bytes ({:.1} MiB)",
        size,
        size as f64 / (1 << 20) as f64
    );

    // A repository placed inside the rescue root.
    let env = Env::new();
    env.init();
    let (data, large) = machine(&env);
    env.backup(&[&data]);
    let root = env.path("rescue");
    let mut rescue = Rescue::new(&root);
    ok(
        "cp",
        &[
            "-a",
            env.repo().to_str().unwrap(),
            root.join("repo").to_str().unwrap(),
        ],
    );
    std::fs::copy(&env.keys.full, root.join("key")).unwrap();
    let took = rescue.mount(&["-r", "/repo", "-k", "/key"], &[], &large);
    eprintln!(
        "local repository: first byte of the newest snapshot {} ms after start",
        took.as_millis()
    );
    compare_through(&root.join("mnt"), &data);
    rescue.unmount();
    let entries: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(
        entries,
        ["dev", "key", "mnt", "proc", "repo", "strongroom", "tmp"],
        "the mount left files behind"
    );
}

#[test]
fn the_static_binary_mounts_over_https_with_the_ca_in_the_key_file() {
    let env = Env::https("admin");
    // A key that carries the CA: the rescue needs no other file.
    let key = env.path("ca.key");
    let ca = util::server::pki().ca.to_str().unwrap().to_string();
    let made = env
        .cmd()
        .args([
            "--ca",
            &ca,
            "keygen",
            "--no-passphrase",
            "--bits",
            "3072",
            "--out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    env.run_with(&key, &["init"]).ok();
    let (data, large) = machine(&env);
    env.run_with(&key, &["backup", data.to_str().unwrap()]).ok();

    let root = env.path("rescue");
    let mut rescue = Rescue::new(&root);
    std::fs::copy(&key, root.join("key")).unwrap();
    let url = env.server().url("admin", "r");
    let password = util::server::password("admin");
    let took = rescue.mount(
        &["-r", &url, "-k", "/key"],
        &[("STRONGROOM_PASSWORD", password)],
        &large,
    );
    eprintln!(
        "strongroom server over HTTPS: first byte {} ms after start",
        took.as_millis()
    );
    compare_through(&root.join("mnt"), &data);
    rescue.unmount();
}
