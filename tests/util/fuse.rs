//! Real FUSE mounts for tests: a guard that always unmounts, and the small
//! tools the mount tests read them with.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::Env;

/// A running mount daemon: unmounted (lazily) and killed when dropped, so
/// a failed test leaves no mount behind.
pub struct Mounted {
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

/// The errno of statfs(2) on `at`, 0 if it succeeds: ENOTCONN on a dead
/// mount (the kernel answers no statfs from its caches).
pub fn statfs_errno(at: &Path) -> i32 {
    let c = std::ffi::CString::new(at.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path and a zeroed statfs buffer.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    errno_of(unsafe { libc::statfs(c.as_ptr(), &mut buf) })
}

pub fn is_mounted(at: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = at.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(at))
}

impl Mounted {
    /// Waits (at most 30 s) until the mount point is a FUSE mount that
    /// answers.
    pub fn wait(mut child: Child, at: &Path) -> Mounted {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A dead mount (its daemon killed) still lists what the kernel
            // cached, but statfs says ENOTCONN.
            if is_mounted(at) && statfs_errno(at) == 0 && std::fs::read_dir(at).is_ok() {
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

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// Sends `signal` and waits (at most 30 s) for the daemon to exit;
    /// returns its exit code and stderr.
    pub fn stop(&mut self, signal: i32) -> (Option<i32>, String) {
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

pub fn mount(env: &Env, at: &Path, extra: &[&str]) -> Mounted {
    std::fs::create_dir_all(at).unwrap();
    let mut args = vec!["mount", at.to_str().unwrap()];
    args.extend_from_slice(extra);
    Mounted::wait(env.spawn(&args), at)
}

pub fn output(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn ls(p: &Path) -> Vec<String> {
    output(Command::new("ls").arg("-A").arg(p))
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn readlink(p: &Path) -> String {
    std::fs::read_link(p).unwrap().to_str().unwrap().to_string()
}

pub fn errno_of(r: libc::c_int) -> i32 {
    if r >= 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}
