//! Every command against a repository on a real strongroom server on
//! loopback (TLS with a certificate from a CA made by `strongroom ca`):
//! init, backup, snapshots, ls, dump, restore, check, check --read-data and
//! mount, with the core's fidelity comparison and the mount's; each role
//! doing what it may.

mod util;

use util::fidelity::no_differences;
use util::fuse::mount;
use util::{Env, build_tricky_tree, sample, under};

#[test]
fn every_command_works_over_https_with_zero_differences() {
    // The host's account holds the writer role: it may create the
    // repository and add to it, and init says it cannot delete.
    let mut env = Env::https("host");
    let init = env.run(&["init"]).ok();
    assert!(
        init.stderr()
            .contains("this credential can add backups but can neither delete nor overwrite history"),
        "{}",
        init.stderr()
    );
    let src = env.path("src");
    build_tricky_tree(&src);
    // A host's writer key through the writer role.
    env.writer(&["backup", src.to_str().unwrap()]).ok();
    env.as_account("admin");
    let summary = env.backup(&[&src]);
    assert_eq!(summary["errors"], 0);
    assert_eq!(env.snapshots().as_array().unwrap().len(), 2);
    let listed = env.run(&["ls", "latest", src.to_str().unwrap()]).ok().stdout();
    assert!(listed.contains(" nanos"), "{listed}");
    let nanos = src.join("nanos");
    let dumped = env.run(&["dump", "latest", nanos.to_str().unwrap()]).ok();
    assert_eq!(dumped.out.stdout, std::fs::read(&nanos).unwrap());
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    no_differences(&src, &under(&target, &src));
    env.run(&["check"]).ok();
    env.run(&["check", "--read-data"]).ok();
    // The auditor's reader account reads and checks, without a lock.
    env.as_account("audit");
    let target = env.path("out-audit");
    let r = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert!(r.stderr().contains("reading without one"), "{}", r.stderr());
    no_differences(&src, &under(&target, &src));
    env.run(&["check", "--read-data"]).ok();
    let b = env.run(&["backup", src.to_str().unwrap()]).fails(1);
    assert!(
        b.stderr()
            .contains("is a reader of repository r and may not write"),
        "{}",
        b.stderr()
    );
}

#[test]
fn a_snapshot_mounted_over_https_reads_identical_then_a_remount_asks_for_no_pack() {
    let env = Env::https("admin");
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let copy = |m: &std::path::Path, out: &str| {
        let out = env.path(out);
        util::sh(&format!("cp -a {} {}", under(m, &src).display(), out.display()));
        no_differences(&src, &out);
    };
    let packs = || env.server().requests("GET /r/packs/");
    let before = packs();
    let mut m = mount(&env, &at, &["--snapshot", "latest"]);
    copy(&at, "out1");
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    let first = packs() - before;
    assert!(first > 0, "the first mount read packs from the server");
    // The ciphertext cache (on by default for remote storage) serves it
    // all the second time: the server sees no request for pack data.
    let mut m = mount(&env, &at, &["--snapshot", "latest"]);
    copy(&at, "out2");
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        packs() - before,
        first,
        "the remount asked the server for pack data"
    );
}

#[test]
fn a_key_file_made_with_the_ca_needs_nothing_else() {
    let mut env = Env::https("admin");
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    // A rescue: the binary, a key file carrying the CA, the password.
    let key = env.path("rescue.key");
    let ca = util::server::pki().ca.clone();
    env.cmd()
        .arg("-k")
        .arg(&env.keys.full)
        .arg("--ca")
        .arg(&ca)
        .args([
            "key",
            "export-writer",
            "--no-passphrase",
            "--host",
            "rescue",
            "--out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    let (url, vars) = env.remote.clone().unwrap();
    let without_ca: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k != "STRONGROOM_CA").collect();
    env.remote = Some((url, without_ca));
    let r = env.run_with(&key, &["snapshots"]).ok();
    assert!(r.stdout().contains("1 snapshot"), "{}", r.stdout());
    // Without it, and with no /etc/strongroom/ca.pem, there is nothing to trust.
    let r = env.run(&["snapshots"]);
    if !std::path::Path::new("/etc/strongroom/ca.pem").exists() {
        assert_eq!(r.code(), 2, "{}", r.stderr());
        assert!(r.stderr().contains("no strongroom CA to trust"), "{}", r.stderr());
    }
}

#[test]
fn a_backup_through_one_server_on_a_bucket_restores_through_another() {
    use util::server;
    let mut env = Env::new();
    let (store, envs) = server::s3_store("two-instances");
    let one = server::Server::start(store.clone(), envs.clone(), env.path("one.log"), 0);
    let two = server::Server::start(store, envs, env.path("two.log"), 0);
    env.remote = Some((one.url("admin", "r"), one.client_env("admin")));
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    env.remote = Some((two.url("admin", "r"), two.client_env("admin")));
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    no_differences(&src, &under(&target, &src));
    env.run(&["check", "--read-data"]).ok();
    assert!(
        two.requests("GET /r/packs/") > 0,
        "the restore read through the second server"
    );
}
