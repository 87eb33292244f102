//! Delivery, as an administrator meets it: the Debian package that
//! `packaging/deb.sh` builds (lintian, its systemd units, installed with
//! apt, the nightly run, purged), the signed APT repository that
//! `packaging/apt-repo.sh` builds (served over HTTPS, installed from with
//! apt's checks on, tampering refused), and the static binary of
//! `packaging/static.sh` mounting a snapshot inside an empty chroot.
//!
//! These tests change the machine: they install and purge the package with
//! apt, so they run one at a time, and a guard purges on every path.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use util::Env;

#[path = "packaging/apt.rs"]
mod apt;
#[path = "packaging/rescue.rs"]
mod rescue;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// dpkg takes one installer at a time; so do these tests.
fn system() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `packaging/NAME` with the environment a build needs, `envs`, and
/// nothing else; returns its last line of output (the path it built).
fn packaging_script(name: &str, args: &[&str], envs: &[(&str, &Path)]) -> PathBuf {
    let mut c = Command::new(Path::new(ROOT).join("packaging").join(name));
    c.args(args).env_clear().current_dir(ROOT).stdin(Stdio::null());
    for var in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ] {
        if let Some(v) = std::env::var_os(var) {
            c.env(var, v);
        }
    }
    c.envs(envs.iter().copied());
    let out = succeeded(&format!("packaging/{name}"), c.output().unwrap());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("a path on stdout").trim();
    let path = Path::new(ROOT).join(last);
    assert!(
        path.is_file(),
        "packaging/{name} printed {last}, which is no file"
    );
    path
}

/// The package, built once per test process by `packaging/deb.sh`.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let deb = packaging_script("deb.sh", &[], &[]);
        let name = deb.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            name,
            format!("strongroom_{}-1_amd64.deb", env!("CARGO_PKG_VERSION"))
        );
        deb
    })
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = succeeded(&format!("{program} {args:?}"), run(program, args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `out`, after asserting that `what` succeeded (its output in the message).
fn succeeded(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The guards purge strongroom: never a copy the machine had before.
fn assert_not_installed() {
    let status = run("dpkg", &["--status", "strongroom"]).status.code();
    assert_eq!(status, Some(1), "strongroom is installed on this machine already");
}

/// The package installed on this machine: purged when dropped, whatever
/// the test did, so a failure leaves no strongroom in /usr/bin.
pub struct Installed;

impl Installed {
    pub fn with_apt(args: &[&str]) -> Installed {
        let guard = Installed;
        ok("apt-get", &[&["install", "-y", "-q"][..], args].concat());
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("apt-get", &["purge", "-y", "-q", "strongroom"]);
    }
}

/// Every file the package holds (not its directories).
fn package_files(deb: &Path) -> Vec<PathBuf> {
    ok("dpkg-deb", &["--contents", deb.to_str().unwrap()])
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let name = l.split_whitespace().last().unwrap();
            Path::new("/").join(name.trim_start_matches("./"))
        })
        .collect()
}

const UNITS: [&str; 3] = [
    "strongroom-backup.service",
    "strongroom-backup.timer",
    "strongroom-server.service",
];

#[test]
fn the_debian_package_passes_lintian_installs_its_units_and_purges_cleanly() {
    let _one = system();
    let deb = deb();
    let deb_s = deb.to_str().unwrap();

    // lintian: warnings are printed, an error fails.
    let lint = run(
        "lintian",
        &["--fail-on", "error", "--no-tag-display-limit", deb_s],
    );
    let said = String::from_utf8_lossy(&lint.stdout);
    eprintln!("lintian:\n{said}");
    assert!(
        lint.status.success(),
        "lintian failed:\n{said}{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(!said.lines().any(|l| l.starts_with("E:")), "{said}");

    let files = package_files(deb);
    for want in [
        "/usr/bin/strongroom",
        "/usr/share/man/man1/strongroom.1.gz",
        "/usr/share/man/man1/strongroom-mount.1.gz",
        "/usr/share/bash-completion/completions/strongroom",
        "/usr/share/zsh/vendor-completions/_strongroom",
        "/usr/share/fish/vendor_completions.d/strongroom.fish",
        "/etc/strongroom/backup.env",
        "/etc/strongroom/server.env",
        "/usr/libexec/strongroom/nightly",
        "/usr/lib/sysusers.d/strongroom.conf",
        "/usr/lib/tmpfiles.d/strongroom-server.conf",
        "/usr/share/doc/strongroom/copyright",
        "/usr/share/doc/strongroom/changelog.Debian.gz",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(want)),
            "{want} is not in the package"
        );
    }
    assert_not_installed();

    {
        let _installed = Installed::with_apt(&[deb_s]);
        assert!(ok("dpkg", &["--status", "strongroom"]).contains("Status: install ok installed"));
        assert_eq!(
            ok("/usr/bin/strongroom", &["--version"]),
            format!("strongroom {}\n", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            ok("man", &["-w", "strongroom"]).trim(),
            "/usr/share/man/man1/strongroom.1.gz"
        );
        let page = Command::new("man")
            .args(["strongroom-backup"])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let page = String::from_utf8_lossy(&page.stdout);
        assert!(
            page.contains("strongroom-backup - Back up paths into a new snapshot"),
            "{page}"
        );

        // The units, as installed: systemd-analyze verify is silent, the
        // server's exposure is 2.0 or lower.
        for unit in UNITS {
            let path = format!("/usr/lib/systemd/system/{unit}");
            let out = run("systemd-analyze", &["verify", &path]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.trim().is_empty(),
                "systemd-analyze verify {unit}:\n{err}"
            );
        }
        for (unit, most) in [
            ("strongroom-server.service", 2.0),
            ("strongroom-backup.service", 3.0),
        ] {
            let path = format!("/usr/lib/systemd/system/{unit}");
            let said = ok(
                "systemd-analyze",
                &["security", "--offline=true", "--no-pager", &path],
            );
            let exposure: f64 = said
                .lines()
                .find_map(|l| l.split("Overall exposure level for ").nth(1))
                .and_then(|l| l.split(": ").nth(1))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
            eprintln!("systemd-analyze security {unit}: {exposure}");
            assert!(exposure <= most, "{unit} scores {exposure}:\n{said}");
        }
        let timer = std::fs::read_to_string("/usr/lib/systemd/system/strongroom-backup.timer").unwrap();
        for line in ["RandomizedDelaySec=", "Persistent=true", "OnCalendar="] {
            assert!(
                timer.lines().any(|l| l.starts_with(line)),
                "{line} missing:\n{timer}"
            );
        }

        // The server's own user, made by systemd-sysusers in postinst, and
        // its data directory, by systemd-tmpfiles.
        let user = ok("getent", &["passwd", "_strongroom"]);
        assert!(
            user.trim_end()
                .ends_with(":/var/lib/strongroom:/usr/sbin/nologin"),
            "{user}"
        );
        let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
        let data = std::fs::metadata("/var/lib/strongroom").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((data.uid(), data.mode() & 0o7777), (uid, 0o700));
        // The environment file may hold credentials: root's alone.
        let meta = std::fs::metadata("/etc/strongroom/backup.env").unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );

        let complete = ok(
            "bash",
            &[
                "-c",
                ". /usr/share/bash-completion/completions/strongroom && complete -p strongroom",
            ],
        );
        assert!(complete.contains("strongroom"), "{complete}");

        nightly_runs_backup_then_forget_where_the_key_allows_then_copy();
    }

    // Purged: not a file of the package is left, nor /etc/strongroom.
    assert_eq!(run("dpkg", &["--status", "strongroom"]).status.code(), Some(1));
    for f in package_files(deb) {
        assert!(!f.exists(), "{} is left after purge", f.display());
    }
    assert!(!Path::new("/etc/strongroom").exists());
}

/// The installed /usr/libexec/strongroom/nightly, as the backup service
/// runs it (the environment file's variables, nothing else).
fn nightly(env: &Env, vars: &[(&str, &Path)], more: &[(&str, &str)]) -> Output {
    let mut c = Command::new("/usr/libexec/strongroom/nightly");
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("STRONGROOM_CACHE_DIR", env.path("cache"))
        .current_dir(env.dir.path())
        .stdin(Stdio::null());
    for (k, v) in vars {
        c.env(k, v);
    }
    for (k, v) in more {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn nightly_runs_backup_then_forget_where_the_key_allows_then_copy() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    util::random_file(&data.join("a"), 300_000, 1);
    let copy = env.path("copy");
    let repo = env.repo();
    let base = [
        ("STRONGROOM_REPO", repo.as_path()),
        ("STRONGROOM_BACKUP_PATHS", data.as_path()),
        ("STRONGROOM_COPY_TO", copy.as_path()),
    ];
    let full = [&base[..], &[("STRONGROOM_KEY", env.keys.full.as_path())]].concat();
    let keep = [("STRONGROOM_KEEP", "--keep-last 1")];
    let count = |repo: &Path| {
        let out = env
            .run_at(repo.as_os_str(), &env.keys.full, &["--json", "snapshots"])
            .ok();
        out.json().as_array().unwrap().len()
    };

    // Full key, two nights (within one second, perhaps: the newer is still
    // the one kept): one snapshot kept, both copied.
    for night in 0..2 {
        util::random_file(&data.join("b"), 200_000, 10 + night);
        let out = nightly(&env, &full, &keep);
        assert!(
            out.status.success(),
            "night {night}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(count(&repo), 1);
    assert_eq!(count(&copy), 2);
    env.run_at(copy.as_os_str(), &env.keys.full, &["check", "--read-data"])
        .ok();

    // A writer key backs up and copies; forgetting is left to the full key.
    let writer = [&base[..], &[("STRONGROOM_KEY", env.keys.writer.as_path())]].concat();
    let out = nightly(&env, &writer, &keep);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("a writer key may not forget"), "{err}");
    assert_eq!(count(&repo), 2);
    assert_eq!(count(&copy), 3);

    // A path that does not exist: the backup is saved (exit 3), forget and
    // copy still run, and the run ends with 3.
    let missing = env.path("no-such-path");
    let paths = format!("{} {}", data.display(), missing.display());
    let out = nightly(
        &env,
        &[&full[..1], &full[2..]].concat(),
        &[keep[0], ("STRONGROOM_BACKUP_PATHS", &paths)],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The policy applies per host and paths: this host's newest, and the
    // writer's.
    assert_eq!(count(&repo), 2);
    assert_eq!(count(&copy), 4);

    // A copy that fails does not keep retention from running; the run
    // fails with the copy's status, naming it.
    let nowhere = Path::new("/proc/strongroom-copy");
    let out = nightly(
        &env,
        &[&full[..2], &full[3..], &[("STRONGROOM_COPY_TO", nowhere)]].concat(),
        &keep,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the copy to /proc/strongroom-copy failed (exit 1)"),
        "{err}"
    );
    let said = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(said.contains("1 to remove"), "forget did not run: {said}");
    assert_eq!(count(&repo), 2);

    // Settings that do not say what they mean stop the run before anything.
    for (var, value) in [("STRONGROOM_FORGET", "maybe"), ("STRONGROOM_KEEP", "")] {
        let out = nightly(&env, &full, &[(var, value)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value:?}: {err}");
        assert!(err.contains(var), "{err}");
    }
    assert_eq!(count(&repo), 2);
    assert_eq!(count(&copy), 4);

    // Not configured: one sentence, nothing run.
    let out = nightly(&env, &full[1..], &[]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("STRONGROOM_REPO") && err.contains("/etc/strongroom/backup.env"),
        "{err}"
    );
}
