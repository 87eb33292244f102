//! Key files under attack, and the secrets they hold kept out of reach:
//! edited headers, swapped certificates, core dumps, the environment.

mod util;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strongroom::format::keyfile::{KeyFileOnDisk, Secrets};
use strongroom::format::{decode, encode};
use util::{Env, random_file, sh};

fn read_key_file(p: &Path) -> KeyFileOnDisk {
    decode(&std::fs::read(p).unwrap(), "key file").unwrap()
}

fn write_key_file(p: &Path, f: &KeyFileOnDisk) {
    std::fs::write(p, encode(f)).unwrap();
}

fn export_writer(env: &Env, host: &str, out: &Path, sealed: bool) {
    let mut args = vec!["key", "export-writer", "--bits", "3072", "--host", host];
    args.extend(if sealed {
        ["--new-passphrase-file", "pass"]
    } else {
        ["--no-passphrase", ""]
    });
    args.retain(|a| !a.is_empty());
    args.extend(["--out", out.to_str().unwrap()]);
    env.run(&args).ok();
}

#[test]
fn a_sealed_key_files_edited_host_is_refused() {
    let env = Env::new();
    env.init();
    std::fs::write(env.path("pass"), "pw\n").unwrap();
    let key = env.path("w.key");
    export_writer(&env, "h1", &key, true);
    let mut f = read_key_file(&key);
    f.host = Some("h2".into());
    write_key_file(&key, &f);
    let r = env
        .run_with(&key, &["--passphrase-file", "pass", "snapshots"])
        .fails(1);
    assert!(r.stderr().contains("damaged or tampered"), "{}", r.stderr());
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.stderr());
}

#[test]
fn a_writer_key_file_with_another_hosts_certificate_is_refused() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a.key"), env.path("b.key"));
    export_writer(&env, "host-a", &a, false);
    export_writer(&env, "host-b", &b, false);
    let mut fa = read_key_file(&a);
    let fb = read_key_file(&b);
    let mut sa: Secrets = decode(&fa.secret, "secrets").unwrap();
    let mut sb: Secrets = decode(&fb.secret, "secrets").unwrap();
    std::mem::swap(&mut sa.writer_certificate, &mut sb.writer_certificate);
    fa.secret = encode(&sa);
    write_key_file(&a, &fa);
    let r = env.run_with(&a, &["snapshots"]).fails(1);
    assert!(
        r.stderr()
            .contains("is refused: its writer certificate is for host host-b"),
        "{}",
        r.stderr()
    );
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.stderr());
    // Nothing could be written with it either.
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    env.run_with(&a, &["backup", src.to_str().unwrap()]).fails(1);
    assert!(env.repo_objects("snapshots").is_empty());
}

/// While a full key is held: no core file, not dumpable (so /proc/PID
/// belongs to root, not to the user), and the passphrase given in the
/// environment is gone from /proc/PID/environ.
#[test]
fn a_process_holding_a_key_cannot_be_dumped_and_hides_its_passphrase() {
    let env = Env::reachable();
    std::fs::write(env.path("pass"), "hunter2-passphrase\n").unwrap();
    let key = env.path("pp.key");
    env.cmd()
        .args(["--passphrase-file", "pass", "keygen", "--bits", "3072", "--out"])
        .arg(&key)
        .output()
        .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
        .unwrap();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    random_file(&src.join("big"), 4 << 20, 3);
    for args in [vec!["init"], vec!["backup", src.to_str().unwrap()]] {
        let o = env
            .cmd()
            .arg("-r")
            .arg(env.repo())
            .arg("-k")
            .arg(&key)
            .args(["--passphrase-file", "pass"])
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    sh(&format!("chmod -R a+rwX {}", env.dir.path().display()));

    // An unprivileged user, with core files allowed, dumping a file larger
    // than a pipe holds: it blocks writing until the test reads on.
    let mut child = std::process::Command::new("prlimit")
        .arg("--core=1048576:unlimited")
        .args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(util::BIN)
        .arg("-r")
        .arg(env.repo())
        .arg("-k")
        .arg(&key)
        .args(["dump", "latest"])
        .arg(src.join("big"))
        .env_clear()
        .env("STRONGROOM_PASSPHRASE", "hunter2-passphrase")
        .env("STRONGROOM_CACHE_DIR", env.path("cache"))
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    out.read_exact(&mut first).unwrap();
    let proc = format!("/proc/{}", child.id());

    let status = std::fs::read_to_string(format!("{proc}/status")).unwrap();
    assert!(status.contains("Uid:\t65534"), "{status}");
    let owner = std::fs::metadata(format!("{proc}/environ")).unwrap().uid();
    assert_eq!(owner, 0, "a dumpable process's /proc entries belong to its user");
    let limits = std::fs::read_to_string(format!("{proc}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    let environ = std::fs::read(format!("{proc}/environ")).unwrap();
    assert!(
        !environ.windows(7).any(|w| w == b"hunter2"),
        "{}",
        String::from_utf8_lossy(&environ)
    );

    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(rest.len() + 1, 4 << 20);
}

#[test]
fn key_show_tells_what_a_key_file_is_without_its_passphrase() {
    let env = Env::new();
    env.init();
    let show = env.run(&["key", "show"]).ok();
    assert_eq!(show.stdout(), "kind: full\npassphrase: no\nca: none\n");
    let show = env.writer(&["key", "show"]).ok();
    assert_eq!(
        show.stdout(),
        "kind: writer\nhost: writer-host\npassphrase: no\nca: none\n"
    );

    // A sealed key: shown from its outer layer, no passphrase asked for
    // (there is no terminal, and none is given).
    std::fs::write(env.path("pass"), "pw\n").unwrap();
    let sealed = env.path("sealed.key");
    export_writer(&env, "h1", &sealed, true);
    let show = env.run_with(&sealed, &["--json", "key", "show"]).ok().json();
    assert_eq!(show["kind"], "writer");
    assert_eq!(show["host"], "h1");
    assert_eq!(show["passphrase"], true);

    let r = env.run_with(&env.path("pass"), &["key", "show"]).fails(1);
    assert!(
        r.stderr().contains("is not a strongroom key file"),
        "{}",
        r.stderr()
    );
}
