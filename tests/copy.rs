//! `copy --to`: a second repository of the same key family, filled
//! verbatim (byte for byte the same objects), resumable, incremental, run
//! with a writer key too; a damaged source object is named and not
//! propagated. Shown local→local, local→S3 (Garage) and local→strongroom
//! server, each time with the original deleted and every snapshot restored
//! from the copy with the same key.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use util::{Env, Run, history, restores_as, sh};

/// Every object of a local repository but its locks: path → bytes.
fn objects(repo: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    util::files_under(repo)
        .into_iter()
        .map(|p| p.strip_prefix(repo).unwrap().to_path_buf())
        .filter(|p| !p.starts_with("locks") && !p.starts_with("tmp"))
        .map(|p| {
            let b = std::fs::read(repo.join(&p)).unwrap();
            (p, b)
        })
        .collect()
}

fn copy(env: &Env, key: &Path, to: &str, more: &[&str]) -> Run {
    let mut args = vec!["--json", "copy", "--to", to];
    args.extend_from_slice(more);
    env.run_with(key, &args)
}

/// Runs `-r repo -k key args…`.
fn on(env: &Env, repo: &str, key: &Path, args: &[&str]) -> Run {
    env.run_at(repo.as_ref(), key, args)
}

fn n(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64().unwrap_or_else(|| panic!("no {path:?} in {v}"))
}

#[test]
fn a_local_copy_is_verbatim_incremental_resumable_and_outlives_its_source() {
    let env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    let to = env.path("second-region");
    let to_s = to.to_str().unwrap();

    let first = copy(&env, &env.keys.full, to_s, &[]).ok().json();
    assert_eq!(n(&first, &["snapshots", "copied"]), 3, "{first}");
    assert_eq!(
        objects(&to),
        objects(&env.repo()),
        "the copy holds the same objects, byte for byte"
    );
    let again = copy(&env, &env.keys.full, to_s, &[]).ok().json();
    assert_eq!(n(&again, &["objects_copied"]), 0, "{again}");
    assert_eq!(n(&again, &["objects_skipped"]), n(&first, &["objects_copied"]));

    // A fourth night: only what it added travels.
    util::random_file(&src.join("night4"), 700 << 10, 41);
    env.run(&["backup", "--time", "2026-01-04T00:30:00Z", src.to_str().unwrap()])
        .ok();
    let packs_before = util::files_under(&to.join("packs")).len();
    let fourth = copy(&env, &env.keys.full, to_s, &[]).ok().json();
    assert_eq!(n(&fourth, &["snapshots", "copied"]), 1, "{fourth}");
    assert_eq!(n(&fourth, &["snapshots", "skipped"]), 3, "{fourth}");
    assert_eq!(n(&fourth, &["keys", "copied"]), 1, "{fourth}");
    assert_eq!(
        util::files_under(&to.join("packs")).len() - packs_before,
        n(&fourth, &["packs", "copied"]) as usize
    );
    let night4 = env.path("state4");
    sh(&format!("cp -a {} {}", src.display(), night4.display()));

    // A fifth night, its copy killed at the third object it puts in place
    // (after the two locks): the next run resumes.
    util::random_file(&src.join("night5"), 900 << 10, 51);
    env.run(&["backup", "--time", "2026-01-05T00:30:00Z", src.to_str().unwrap()])
        .ok();
    let status = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=renameat,rename,renameat2:signal=SIGKILL:when=3",
        ])
        .arg(util::BIN)
        .arg("-r")
        .arg(env.repo())
        .arg("-k")
        .arg(&env.keys.full)
        .args(["-q", "copy", "--to", to_s])
        .env_clear()
        .env("STRONGROOM_CACHE_DIR", env.path("cache"))
        .env("RAYON_NUM_THREADS", "1")
        .status()
        .expect("strace runs");
    assert!(!status.success(), "the copy was killed");
    assert_eq!(
        on(&env, to_s, &env.keys.full, &["--json", "snapshots"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        4,
        "a killed copy writes no snapshot before its data"
    );
    let resumed = copy(&env, &env.keys.full, to_s, &[]).ok().json();
    assert_eq!(n(&resumed, &["snapshots", "copied"]), 1, "{resumed}");
    assert!(n(&resumed, &["objects_skipped"]) > 0, "{resumed}");
    assert_eq!(objects(&to), objects(&env.repo()));

    // The first region is lost: everything comes back from the second.
    std::fs::remove_dir_all(env.repo()).unwrap();
    let from_copy = |args: &[&str]| on(&env, to_s, &env.keys.full, args);
    from_copy(&["check", "--read-data"]).ok();
    let ids = util::snapshot_ids(&from_copy(&["--json", "snapshots"]).ok().json());
    assert_eq!(ids.len(), 5);
    let restore = |id: &str, state: &Path| {
        let target = env.path(&format!("out-{id}"));
        from_copy(&["restore", id, "--target", target.to_str().unwrap()]).ok();
        util::fidelity::no_differences(state, &util::under(&target, &src));
    };
    for (state, id) in &gens {
        restore(id, state);
    }
    restore(&ids[3], &night4);
    restore(&ids[4], &src);
}

#[test]
fn a_writer_key_copies_everything_and_a_damaged_object_is_named_not_propagated() {
    let env = Env::new();
    env.init();
    let (_, gens) = history(&env);
    let to = env.path("copy-by-writer");
    let w = copy(&env, &env.keys.writer, to.to_str().unwrap(), &[])
        .ok()
        .json();
    assert_eq!(n(&w, &["snapshots", "copied"]), 3, "{w}");
    assert_eq!(objects(&to), objects(&env.repo()));
    // Which data chosen snapshots use is in their trees: not for a writer.
    let r = copy(&env, &env.keys.writer, to.to_str().unwrap(), &["latest"]).fails(2);
    assert!(r.stderr().contains("full key"), "{}", r.stderr());

    let (pack, name) = env.largest_pack();
    util::flip_byte(&pack, 100);
    let other = env.path("copy-of-damage");
    let r = copy(&env, &env.keys.full, other.to_str().unwrap(), &[]).fails(1);
    assert!(
        r.stderr().contains(&name) && r.stderr().contains("does not match its name"),
        "{}",
        r.stderr()
    );
    assert!(
        !util::files_under(&other.join("packs"))
            .iter()
            .any(|p| p.ends_with(&name)),
        "the damaged pack is not copied"
    );
    let summary: serde_json::Value = serde_json::from_str(r.stdout().lines().next().unwrap()).unwrap();
    assert_eq!(summary["damaged"].as_array().unwrap().len(), 1);
    // Nor the index or snapshots that would name it: the copy stays sound.
    assert!(util::files_under(&other.join("snapshots")).is_empty());
    assert!(util::files_under(&other.join("index")).is_empty());
    on(&env, other.to_str().unwrap(), &env.keys.full, &["check"]).ok();
    // The copy made before the damage still restores everything.
    for (state, id) in &gens {
        let target = env.path(&format!("out-{id}"));
        on(
            &env,
            to.to_str().unwrap(),
            &env.keys.full,
            &["restore", id, "--target", target.to_str().unwrap()],
        )
        .ok();
        util::fidelity::no_differences(state, &util::under(&target, &env.path("src")));
    }
}

#[test]
fn chosen_snapshots_take_only_what_they_need() {
    let env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    let to = env.path("latest-only");
    let to_s = to.to_str().unwrap();
    let latest = copy(&env, &env.keys.full, to_s, &["latest"]).ok().json();
    assert_eq!(n(&latest, &["snapshots", "copied"]), 1, "{latest}");
    assert!(
        util::files_under(&to.join("packs")).len() < util::files_under(&env.repo().join("packs")).len(),
        "the first night's tree pack stays behind"
    );
    let on_copy = |args: &[&str]| on(&env, to_s, &env.keys.full, args);
    on_copy(&["check", "--read-data"]).ok();
    let target = env.path("out-latest");
    on_copy(&["restore", "latest", "--target", target.to_str().unwrap()]).ok();
    util::fidelity::no_differences(&gens[2].0, &util::under(&target, &src));

    // Then the rest: the index names each pack once more at most.
    let rest = copy(&env, &env.keys.full, to_s, &[&gens[0].1, &gens[1].1])
        .ok()
        .json();
    assert_eq!(n(&rest, &["snapshots", "copied"]), 2, "{rest}");
    on_copy(&["check", "--read-data"]).ok();
    let all = copy(&env, &env.keys.full, to_s, &[]).ok().json();
    assert_eq!(n(&all, &["snapshots", "copied"]), 0, "{all}");
    assert_eq!(n(&all, &["packs", "copied"]), 0, "{all}");
    on_copy(&["check", "--read-data"]).ok();
}

#[test]
fn copies_to_s3_and_to_the_strongroom_server_restore_with_the_original_gone() {
    let mut env = Env::new();
    env.init();
    let (src, gens) = history(&env);
    let server = util::server::Server::on_data(&env.path("region-2-server"));
    let targets = [
        (
            util::garage::repo_url("copy-to-s3"),
            util::garage::client_env()
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
        ),
        (server.url("admin", "r"), server.client_env("admin")),
    ];
    for (url, vars) in &targets {
        let out = env
            .cmd()
            .envs(vars.iter().map(|(a, b)| (a.as_str(), b.as_str())))
            .arg("-r")
            .arg(env.repo())
            .arg("-k")
            .arg(&env.keys.full)
            .args(["--json", "copy", "--to", url])
            .output()
            .unwrap();
        let r = Run { out }.ok().json();
        assert_eq!(n(&r, &["snapshots", "copied"]), 3, "{url}: {r}");
    }
    std::fs::remove_dir_all(env.repo()).unwrap();
    env.server = Some(server);
    for (url, vars) in targets {
        env.remote = Some((url.clone(), vars));
        env.run(&["check", "--read-data"]).ok();
        for (state, id) in &gens {
            restores_as(&env, id, &src, state);
        }
    }
}
