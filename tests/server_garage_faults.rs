//! The object store going away under the strongroom server: Garage killed
//! with SIGKILL in the middle of a backup through a server on `--s3`, then
//! started again. The server answers with a clear error while its storage
//! is gone, the client retries, and afterwards nothing half-written is
//! visible: `check --read-data` is clean, the next backup completes, and
//! the data restores identically.
//!
//! A test binary of its own: it kills its process's Garage.

mod util;

use std::time::Duration;

use util::fidelity::no_differences;
use util::{Env, garage, random_file, server, under};

#[test]
fn garage_killed_under_the_server_mid_backup_leaves_nothing_half_written() {
    let mut env = Env::new();
    let srv = server::Server::on_s3("garage-gone", env.path("server.log"));
    env.remote = Some((srv.url("host", "r"), srv.client_env("host")));
    env.server = Some(srv);
    env.run(&["init"]).ok();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        random_file(&src.join(format!("f{i}")), 12 << 20, i + 100);
    }
    let mut backup = env
        .cmd()
        .arg("-r")
        .arg(env.repo_arg())
        .arg("-k")
        .arg(&env.keys.writer)
        .args(["backup", src.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if env.server().requests("PUT /r/packs/") >= 2 {
            break;
        }
        assert!(
            backup.try_wait().unwrap().is_none(),
            "the backup ended before two packs were stored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    garage::garage().kill();
    // The server says its storage failed (and the client waits and retries).
    while env.server().requests(" 503 ") == 0 {
        assert!(
            backup.try_wait().unwrap().is_none(),
            "the backup ended while the store was gone"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = env.server().log_text();
    assert!(
        log.contains("the server's storage failed") || log.contains("failed"),
        "{log}"
    );
    garage::garage().restart();
    let out = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(1) => assert_eq!(stderr.trim().lines().count(), 1, "{stderr}"),
        other => panic!("backup ended with {other:?}: {stderr}"),
    }
    env.writer(&["backup", src.to_str().unwrap()]).ok();
    env.as_account("admin");
    env.run(&["check", "--read-data"]).ok();
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    no_differences(&src, &under(&target, &src));
}
