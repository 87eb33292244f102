//! `forget` and its retention policy, on snapshots made with
//! `backup --time`: seven years of nightly backups of two hosts, kept
//! exactly as the seed's policy says (daily for 90 days, monthly for 6
//! years), checked against the policy computed here by plain calendar
//! arithmetic, across month ends and leap days, for snapshots taken just
//! after midnight UTC.

mod util;

use std::collections::{BTreeMap, BTreeSet};

use util::Env;

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn rfc3339(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// What `--keep-within-daily 90d --keep-within-monthly 6y` keeps of one
/// host's snapshot times: the newest of each day from 90 days before the
/// newest, and of each month from 6 calendar years before it (29 February
/// falling back to the 28th).
fn expected(times: &[i64]) -> BTreeSet<i64> {
    let newest = *times.iter().max().unwrap();
    let daily_cutoff = newest - 90 * 86400;
    let (y, m, d) = civil_from_days(newest.div_euclid(86400));
    let d6 = if m == 2 && d == 29 && !is_leap(y - 6) {
        28
    } else {
        d
    };
    let monthly_cutoff = days_from_civil(y - 6, m, d6) * 86400 + newest.rem_euclid(86400);
    let mut by_day: BTreeMap<i64, i64> = BTreeMap::new();
    let mut by_month: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for &t in times {
        if t >= daily_cutoff {
            let e = by_day.entry(t.div_euclid(86400)).or_insert(t);
            *e = (*e).max(t);
        }
        if t >= monthly_cutoff {
            let (y, m, _) = civil_from_days(t.div_euclid(86400));
            let e = by_month.entry((y, m)).or_insert(t);
            *e = (*e).max(t);
        }
    }
    by_day.values().chain(by_month.values()).copied().collect()
}

fn parse_time(s: &str) -> i64 {
    // YYYY-MM-DDTHH:MM:SS[.fff]Z
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    days_from_civil(n(0, 4), n(5, 7), n(8, 10)) * 86400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)
}

#[test]
fn seven_years_of_nightly_backups_of_two_hosts_keep_exactly_the_seed_policy() {
    let env = Env::new();
    // 5,114 backups: on tmpfs, where an fsync costs nothing.
    let _repo = util::Tmpfs::mount(&env.repo(), "1G");
    let _cache = util::Tmpfs::mount(&env.path("cache"), "1G");
    // A fresh tmpfs is world-writable, which no cache directory may be.
    for d in [env.repo(), env.path("cache")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"nightly").unwrap();
    // Host a just after midnight, host b at noon; both from 2019-01-01
    // (2020 and 2024 are leap years) to 2025-12-31, and host a twice on
    // the last day of each month (00:00:05 and 00:00:30).
    let first = days_from_civil(2019, 1, 1);
    let last = days_from_civil(2025, 12, 31);
    let mut runs: Vec<(String, i64)> = Vec::new();
    for day in first..=last {
        runs.push(("a".into(), day * 86400 + 30));
        runs.push(("b".into(), day * 86400 + 12 * 3600));
        let (_, _, d) = civil_from_days(day + 1);
        if d == 1 {
            runs.push(("a".into(), day * 86400 + 5));
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((host, t)) = runs.get(i) else { return };
                    let time = rfc3339(*t);
                    env.run(&[
                        "-q",
                        "backup",
                        "--host",
                        host,
                        "--time",
                        &time,
                        src.to_str().unwrap(),
                    ])
                    .ok();
                }
            });
        }
    });
    assert_eq!(env.snapshots().as_array().unwrap().len(), runs.len());
    let policy = ["--keep-within-daily", "90d", "--keep-within-monthly", "6y"];
    // A writer key may not forget.
    let w = env.writer(&[&["forget"][..], &policy[..]].concat()).fails(2);
    assert!(
        w.stderr().contains("cannot forget snapshots; use the full key"),
        "{}",
        w.stderr()
    );
    assert_eq!(w.stderr().trim().lines().count(), 1, "{}", w.stderr());
    // The dry run says what the real one then does.
    let dry = env
        .run(&[&["--json", "forget", "--dry-run"][..], &policy[..]].concat())
        .ok()
        .json();
    assert_eq!(
        env.snapshots().as_array().unwrap().len(),
        runs.len(),
        "a dry run removes nothing"
    );
    let done = env
        .run(&[&["--json", "forget"][..], &policy[..]].concat())
        .ok()
        .json();
    assert_eq!(dry["groups"], done["groups"]);
    let groups = done["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "one group per host (and set of paths)");
    let mut total_kept = 0;
    for g in groups {
        let host = g["host"].as_str().unwrap();
        let times: Vec<i64> = runs.iter().filter(|(h, _)| h == host).map(|(_, t)| *t).collect();
        let want = expected(&times);
        let kept: BTreeSet<i64> = g["keep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| parse_time(k["time"].as_str().unwrap()))
            .collect();
        let missing: Vec<String> = want.difference(&kept).map(|t| rfc3339(*t)).collect();
        let extra: Vec<String> = kept.difference(&want).map(|t| rfc3339(*t)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "host {host}: missing {missing:?}, extra {extra:?}"
        );
        assert_eq!(g["remove"].as_array().unwrap().len(), times.len() - want.len());
        // Every kept snapshot says why.
        for k in g["keep"].as_array().unwrap() {
            assert!(!k["reasons"].as_array().unwrap().is_empty());
        }
        total_kept += want.len();
    }
    assert_eq!(env.snapshots().as_array().unwrap().len(), total_kept);
    // Per host: 91 days (the newest's and 90 before), 73 months (from
    // December 2019), three of them the same snapshot: 161.
    assert_eq!(total_kept, 2 * 161);
    // What remains restores, and checks clean.
    env.run(&["check"]).ok();
    let target = env.path("out");
    env.run(&[
        "restore",
        "latest",
        "--host",
        "a",
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
}

#[test]
fn forget_keeps_each_group_apart_and_never_counts_a_snapshot_from_the_future() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
    }
    for (dir, times) in [
        (
            &a,
            [
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "2026-01-03T00:00:00Z",
            ],
        ),
        (
            &b,
            [
                "2025-01-01T00:00:00Z",
                "2025-01-02T00:00:00Z",
                "2025-01-03T00:00:00Z",
            ],
        ),
    ] {
        for t in times {
            env.run(&["-q", "backup", "--host", "h", "--time", t, dir.to_str().unwrap()])
                .ok();
        }
    }
    // Planted far ahead: it must not push the others out of the span.
    env.run(&[
        "-q",
        "backup",
        "--host",
        "h",
        "--time",
        "2100-01-01T00:00:00Z",
        a.to_str().unwrap(),
    ])
    .ok();
    let r = env.run(&["--json", "forget", "--keep-within", "1d"]).ok();
    let groups = r.json()["groups"].as_array().unwrap().clone();
    assert_eq!(
        groups.len(),
        2,
        "the same host with two sets of paths: two groups"
    );
    for g in &groups {
        let keep = g["keep"].as_array().unwrap();
        let reasons: Vec<String> = keep
            .iter()
            .map(|k| k["reasons"][0].as_str().unwrap().to_string())
            .collect();
        // The newest real one of each group and the one after it (1 day).
        assert_eq!(g["remove"].as_array().unwrap().len(), 1, "{g}");
        assert!(reasons.iter().any(|r| r == "within 1d"), "{reasons:?}");
    }
    assert!(r.stderr().contains("dated in the future"), "{}", r.stderr());
    // No policy at all is refused, rather than removing everything.
    let none = env.run(&["forget"]).fails(2);
    assert!(none.stderr().contains("no policy given"), "{}", none.stderr());
    // Snapshots gone by forget are not taken for a rollback.
    let s = env.run(&["snapshots"]).ok();
    assert!(!s.stderr().contains("rolled back"), "{}", s.stderr());
}
