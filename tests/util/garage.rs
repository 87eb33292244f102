//! A real S3 server for the tests: Garage, single node, sqlite metadata,
//! on loopback ports of its own, started once per test process and killed
//! with it. Each test takes its own prefix of the one bucket.
//!
//! Garage is found as `$STRONGROOM_TEST_GARAGE`, else `garage` on `PATH`,
//! `/usr/local/bin` or `~/.cargo/bin`; `.ci/run` installs it. A test that
//! cannot find it fails: it never skips.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "GK737472616e67726f6f6d7465";
pub const SECRET: &str = "737472616e67726f6f6d2074657374206b657920666f72206761726167652121";
pub const BUCKET: &str = "strongroom";
pub const REGION: &str = "garage";

pub struct Garage {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub dir: PathBuf,
    bin: PathBuf,
    pid: std::sync::Mutex<u32>,
    s3_port: u16,
}

/// Starts `garage server` from a thread that lives as long as the process:
/// the server is killed when the thread that spawned it ends.
fn spawn(bin: &Path, dir: &Path) -> Result<std::process::Child, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (b, d) = (bin.to_path_buf(), dir.to_path_buf());
    std::thread::spawn(move || {
        let spawned = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .and_then(|log| {
                let mut cmd = Command::new(&b);
                cmd.arg("-c")
                    .arg(d.join("garage.toml"))
                    .arg("server")
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log);
                // SAFETY: prctl only, between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                cmd.spawn()
            });
        let _ = tx.send(spawned);
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("starting {}: {e}", bin.display()))
}

fn find() -> PathBuf {
    if let Some(p) = std::env::var_os("STRONGROOM_TEST_GARAGE") {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/local/bin".into());
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need Garage: `cargo install garage --locked --no-default-features \
                 --features bundled-libs,sqlite` (.ci/run installs it), or set STRONGROOM_TEST_GARAGE"
            )
        })
}

/// Two distinct free loopback ports (both held until both are chosen).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// Removes the directories of Garages whose test process is gone.
fn remove_stale(parent: &Path) {
    for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("garage-")?.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Garage {
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.join("garage.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "garage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start() -> Result<Garage, String> {
        let bin = find();
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale(parent);
        let dir = parent.join(format!("garage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (rpc, s3) = free_ports();
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + 11) as u8)).collect();
        std::fs::write(
            dir.join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\n\
                 data_dir = \"{d}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.localhost\"\n",
                d = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut child = spawn(&bin, &dir)?;
        let pid = child.id();
        let g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            dir,
            bin,
            pid: std::sync::Mutex::new(pid),
            s3_port: s3,
        };
        let log = |g: &Garage| std::fs::read_to_string(g.dir.join("server.log")).unwrap_or_default();
        // Up once its RPC port answers (`status` asks the server itself)
        // and its S3 port takes connections.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("garage exited ({status}): {}", log(&g)));
            }
            let s3_up = std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok();
            if s3_up && g.cli(&["status"]).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("garage did not start within 60 s: {}", log(&g)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let node = g.cli(&["node", "id", "-q"])?;
        let node = node.trim().split('@').next().unwrap_or_default().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        g.cli(&["layout", "apply", "--version", "1"])?;
        g.cli(&["bucket", "create", BUCKET])?;
        g.cli(&["key", "import", "--yes", "-n", "tests", KEY_ID, SECRET])?;
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID,
        ])?;
        // The child stays with the parked thread's process; dropping the
        // handle neither kills nor waits for it.
        drop(child);
        Ok(g)
    }
}

impl Garage {
    /// Kills the server with SIGKILL (for tests of a store that goes away).
    pub fn kill(&self) {
        let pid = *self.pid.lock().unwrap();
        // SAFETY: signalling the Garage this process started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same ports and data, and waits until it
    /// answers.
    pub fn restart(&self) {
        let child = spawn(&self.bin, &self.dir).unwrap();
        *self.pid.lock().unwrap() = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok()
            && self.cli(&["status"]).is_ok())
        {
            assert!(Instant::now() < deadline, "garage did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(child);
    }
}

/// The one Garage of this test process, started by the first test that
/// asks; a failure to start is told to every test, and not tried again.
pub fn garage() -> &'static Garage {
    static G: OnceLock<Result<Garage, String>> = OnceLock::new();
    match G.get_or_init(Garage::start) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

/// A repository URL of a prefix no other test of this process uses.
pub fn repo_url(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("s3:{}/{BUCKET}/{test}-{n}", garage().endpoint)
}

/// The environment a client of the test bucket needs.
pub fn client_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", REGION),
    ]
}
