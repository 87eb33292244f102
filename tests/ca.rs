//! `strongroom ca init` and `ca issue`: a private CA and server
//! certificates signed by it, checked with `openssl verify`.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use util::Env;

fn verify(env: &Env, ca: &str, cert: &str, extra: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(["verify", "-CAfile", ca, "-purpose", "sslserver"])
        .args(extra)
        .arg(cert)
        .current_dir(env.dir.path())
        .output()
        .expect("openssl (Debian openssl) is needed");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn mode(env: &Env, rel: &str) -> u32 {
    std::fs::metadata(env.path(rel)).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_ca_issues_server_certificates_that_openssl_verifies_for_their_host_only() {
    let env = Env::new();
    let ca = |args: &[&str]| {
        let mut c = env.cmd();
        c.arg("ca").args(args);
        util::Run {
            out: c.output().unwrap(),
        }
    };
    ca(&["init", "--out", "ca"]).ok();
    assert_eq!(mode(&env, "ca/ca.key"), 0o600);
    // Whatever the umask.
    assert_eq!(mode(&env, "ca/ca.pem"), 0o644);
    assert_eq!(mode(&env, "ca"), 0o700);
    // Made once: a second init replaces nothing.
    let before = std::fs::read(env.path("ca/ca.key")).unwrap();
    let again = ca(&["init", "--out", "ca"]).fails(2);
    assert!(again.stderr().contains("already exists"), "{}", again.stderr());
    assert_eq!(std::fs::read(env.path("ca/ca.key")).unwrap(), before);

    ca(&[
        "issue",
        "--ca",
        "ca",
        "--host",
        "backup.example.net",
        "--out",
        "certs",
    ])
    .ok();
    ca(&["issue", "--ca", "ca", "--host", "127.0.0.1", "--out", "certs"]).ok();
    assert_eq!(mode(&env, "certs/backup.example.net.key"), 0o600);
    let cert = "certs/backup.example.net.pem";
    let (ok, out) = verify(
        &env,
        "ca/ca.pem",
        cert,
        &["-verify_hostname", "backup.example.net"],
    );
    assert!(ok, "{out}");
    let (ok, out) = verify(
        &env,
        "ca/ca.pem",
        cert,
        &["-verify_hostname", "other.example.net"],
    );
    assert!(!ok, "a certificate for another host: {out}");
    let (ok, out) = verify(
        &env,
        "ca/ca.pem",
        "certs/127.0.0.1.pem",
        &["-verify_ip", "127.0.0.1"],
    );
    assert!(ok, "{out}");

    // Another CA's certificate does not verify under this one.
    ca(&["init", "--out", "other"]).ok();
    ca(&[
        "issue",
        "--ca",
        "other",
        "--host",
        "backup.example.net",
        "--out",
        "othercerts",
    ])
    .ok();
    let (ok, out) = verify(&env, "ca/ca.pem", "othercerts/backup.example.net.pem", &[]);
    assert!(!ok, "{out}");

    // Host names become file names: nothing else is taken.
    for bad in ["../x", "a/b", "", "-x.example", "a..b", "x\ny"] {
        let host = format!("--host={bad}");
        let r = ca(&["issue", "--ca", "ca", &host, "--out", "certs"]).fails(2);
        assert!(r.stderr().contains("not a host name"), "{bad:?}: {}", r.stderr());
    }
    assert!(!env.path("x.pem").exists() && !env.path("x.key").exists());

    // A name already taken refuses both files, and leaves it as it was.
    std::fs::write(env.path("certs/taken.example.pem"), "mine").unwrap();
    let r = ca(&["issue", "--ca", "ca", "--host", "taken.example", "--out", "certs"]).fails(2);
    assert!(r.stderr().contains("nothing was written"), "{}", r.stderr());
    assert!(!env.path("certs/taken.example.key").exists());
    assert_eq!(
        std::fs::read_to_string(env.path("certs/taken.example.pem")).unwrap(),
        "mine"
    );

    // Keys go only where nobody else can write.
    std::fs::create_dir(env.path("shared")).unwrap();
    std::fs::set_permissions(env.path("shared"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = ca(&["init", "--out", "shared"]).fails(2);
    assert!(r.stderr().contains("only you can write"), "{}", r.stderr());
    assert!(!env.path("shared/ca.key").exists());
    std::os::unix::fs::symlink(env.path("ca"), env.path("link")).unwrap();
    ca(&["issue", "--ca", "ca", "--host", "a.example", "--out", "link"]).fails(1);
    // A new directory is made 0700.
    assert_eq!(mode(&env, "certs"), 0o700);

    // The CA's key must be its owner's alone, and belong to ca.pem.
    std::fs::set_permissions(env.path("ca/ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = ca(&["issue", "--ca", "ca", "--host", "b.example", "--out", "certs"]).fails(2);
    assert!(r.stderr().contains("can be read by others"), "{}", r.stderr());
    std::fs::set_permissions(env.path("ca/ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::copy(env.path("other/ca.key"), env.path("mixed.key")).unwrap();
    std::fs::create_dir(env.path("mixed")).unwrap();
    std::fs::copy(env.path("ca/ca.pem"), env.path("mixed/ca.pem")).unwrap();
    std::fs::rename(env.path("mixed.key"), env.path("mixed/ca.key")).unwrap();
    std::fs::set_permissions(env.path("mixed/ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = ca(&["issue", "--ca", "mixed", "--host", "c.example", "--out", "certs"]).fails(1);
    assert!(r.stderr().contains("does not belong to ca.key"), "{}", r.stderr());
}
