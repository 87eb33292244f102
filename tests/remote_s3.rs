//! Every command against an S3 repository on a real S3 server (Garage on
//! loopback, which checks every signature): init, backup, snapshots, ls,
//! dump, restore, check, check --read-data and mount, with the core's
//! fidelity comparison and the mount's.

mod util;

use util::fidelity::no_differences;
use util::fuse::mount;
use util::{Env, build_tricky_tree, sample, under};

#[test]
fn every_command_works_over_s3_with_zero_differences() {
    let env = Env::s3("everything");
    let init = env.run(&["init"]).ok();
    assert!(
        init.stderr()
            .contains("these storage credentials can also delete the repository's history"),
        "{}",
        init.stderr()
    );
    let src = env.path("src");
    build_tricky_tree(&src);
    let summary = env.backup(&[&src]);
    assert_eq!(summary["errors"], 0);
    // A host's writer key backs up too (and reads nothing).
    env.writer(&["backup", src.to_str().unwrap()]).ok();
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
}

/// Pack reads the daemon, run with `-v`, told at exit.
fn pack_reads(stderr: &str) -> u64 {
    util::opened(stderr).1
}

#[test]
fn a_snapshot_mounted_from_s3_reads_identical_then_a_remount_reads_no_pack() {
    let env = Env::s3("mount");
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let copy = |m: &std::path::Path, out: &str| {
        let out = env.path(out);
        util::sh(&format!("cp -a {} {}", under(m, &src).display(), out.display()));
        no_differences(&src, &out);
    };
    let mut m = mount(&env, &at, &["-v", "--snapshot", "latest"]);
    copy(&at, "out1");
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(pack_reads(&stderr) > 0, "{stderr}");
    // The ciphertext cache (on by default for remote storage) serves it
    // all the second time.
    let mut m = mount(&env, &at, &["-v", "--snapshot", "latest"]);
    copy(&at, "out2");
    let (code, stderr) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(pack_reads(&stderr), 0, "{stderr}");
}
