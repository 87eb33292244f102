//! Load on one strongroom server: 8 clients backing up at once while 4
//! mounts copy a snapshot out, round after round, on loopback. No error,
//! no lost object (`check --read-data` clean, every snapshot there, the
//! newest of two hosts restoring identically), and the server's memory
//! bounded (its peak is printed).
//!
//! `STRONGROOM_LOAD_ROUNDS` sets the rounds (2 here; `benches/load.sh`
//! runs many more in a release build).

mod util;

use util::fidelity::no_differences;
use util::fuse::mount;
use util::{Env, random_file, sample, under};

const BACKUPS: usize = 8;
const MOUNTS: usize = 4;

#[test]
fn eight_backups_and_four_mounts_at_once_lose_nothing_in_bounded_memory() {
    let rounds: usize = std::env::var("STRONGROOM_LOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let env = Env::https("admin");
    env.init();
    let shown = sample(&env);
    env.backup(&[&shown]);
    let started = std::time::Instant::now();
    let mounts: Vec<_> = (0..MOUNTS)
        .map(|i| {
            let at = env.path(&format!("mnt{i}"));
            // Little memory and no disk cache: every round reads the server.
            mount(
                &env,
                &at,
                &["--snapshot", "latest", "--no-disk-cache", "--cache-size", "4M"],
            )
        })
        .collect();
    let hosts: Vec<std::path::PathBuf> = (0..BACKUPS).map(|i| env.path(&format!("host{i}"))).collect();
    std::thread::scope(|s| {
        for (i, dir) in hosts.iter().enumerate() {
            let env = &env;
            s.spawn(move || {
                for r in 0..rounds {
                    // Each round changes half of what the host has.
                    std::fs::create_dir_all(dir).unwrap();
                    for f in 0..4 {
                        if r == 0 || f % 2 == r % 2 {
                            random_file(
                                &dir.join(format!("f{f}")),
                                3 << 20,
                                (i * 1000 + r * 10 + f) as u64 + 1,
                            );
                        }
                    }
                    let host = format!("host{i}");
                    env.run(&["-q", "backup", "--host", &host, dir.to_str().unwrap()])
                        .ok();
                }
            });
        }
        for i in 0..MOUNTS {
            let (env, shown) = (&env, &shown);
            s.spawn(move || {
                for r in 0..rounds {
                    let out = env.path(&format!("copy{i}-{r}"));
                    let from = under(&env.path(&format!("mnt{i}")), shown);
                    util::sh(&format!("cp -a {} {}", from.display(), out.display()));
                    no_differences(shown, &out);
                    std::fs::remove_dir_all(&out).unwrap();
                }
            });
        }
    });
    let took = started.elapsed();
    for mut m in mounts {
        let (code, stderr) = m.stop(libc::SIGTERM);
        assert_eq!(code, Some(0), "{stderr}");
    }
    let peak = env.server().peak_rss();
    eprintln!(
        "{BACKUPS} clients x {rounds} backups and {MOUNTS} mounts x {rounds} copies in {:.1} s; server peak RSS {:.1} MiB; {} requests",
        took.as_secs_f64(),
        peak as f64 / (1 << 20) as f64,
        env.server().requests(" ms")
    );
    assert!(peak < 1536 << 20, "the server's memory grew to {peak} bytes");
    assert_eq!(env.snapshots().as_array().unwrap().len(), 1 + BACKUPS * rounds);
    env.run(&["check", "--read-data"]).ok();
    for i in [0, BACKUPS - 1] {
        let target = env.path(&format!("restored{i}"));
        env.run(&[
            "restore",
            "latest",
            "--host",
            &format!("host{i}"),
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
        no_differences(&hosts[i], &under(&target, &hosts[i]));
    }
    assert_eq!(env.server().requests(" 503 "), 0, "the server's storage failed");
}
