//! Damaged storage breaks only what it touches: a garbage object is named
//! by `check` and skipped by everything else, a lost or truncated pack never
//! spreads into new snapshots, and `repair` saves what survives.

mod util;

use strongroom::format::Id;
use util::{Env, sample};

/// Stores `bytes` in the repository under their content name.
fn put(env: &Env, dir: &str, bytes: &[u8]) -> String {
    let name = Id::of_bytes(bytes).to_hex();
    let at = if dir == "packs" {
        env.repo().join("packs").join(&name[..2])
    } else {
        env.repo().join(dir)
    };
    std::fs::write(at.join(&name), bytes).unwrap();
    name
}

fn id_of(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().unwrap().to_string()
}

#[test]
fn a_truncated_pack_is_found_by_plain_check_and_not_deduplicated_against() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let (pack, name) = env.largest_pack();
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let r = env.run(&["check"]).fails(1);
    assert!(
        r.stderr().contains(&name) && r.stderr().contains("truncated"),
        "{}",
        r.stderr()
    );
    let w = env.backup(&[&src]);
    assert!(w["bytes_added"].as_u64().unwrap() > 3 << 20, "{w}");
    env.restore_matches("latest", &src);
}

#[test]
fn garbage_index_file_manifest_and_key_envelope_break_only_themselves() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let first = id_of(&env.backup(&[&src]));
    // Any bytes, named by their hash: an append-only writer can add them.
    let index = put(&env, "index", &b"not an index file ".repeat(40));
    let manifest = put(&env, "snapshots", &b"not a manifest ".repeat(40));
    let envelope = put(&env, "keys", &b"not a key envelope ".repeat(40));

    let r = env.run(&["snapshots"]).ok();
    assert!(r.stdout().contains(&first[..8]), "{}", r.stdout());
    assert!(r.stderr().contains(&manifest), "{}", r.stderr());
    env.run(&["ls", "latest"]).ok();
    env.restore_matches("latest", &src);
    env.writer(&["backup", src.to_str().unwrap()]).ok();
    env.backup(&[&src]);
    env.restore_matches("latest", &src);

    let r = env.run(&["check"]).fails(1);
    for name in [&index, &manifest, &envelope] {
        assert!(r.stderr().contains(name.as_str()), "{name}: {}", r.stderr());
    }
    assert_eq!(
        r.stderr().lines().filter(|l| l.starts_with("error:")).count(),
        3,
        "{}",
        r.stderr()
    );
}

#[test]
fn a_pack_header_copied_onto_other_bytes_is_never_indexed() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    let first = id_of(&env.backup(&[&src]));
    // The attacker keeps a real pack's sealed header and trailer and puts
    // zeros of the same length in front: a new, well-named object.
    let (pack, _) = env.largest_pack();
    let bytes = std::fs::read(&pack).unwrap();
    let t = bytes.len() - strongroom::format::pack::TRAILER_LEN;
    let body_end = t - strongroom::format::pack::parse_trailer(&bytes[t..]).unwrap();
    let mut forged = vec![0u8; body_end];
    forged.extend_from_slice(&bytes[body_end..]);
    let forged = put(&env, "packs", &forged);
    // As if the run that wrote the real pack had been interrupted before
    // its index and snapshot, and its real pack lost.
    std::fs::remove_file(&pack).unwrap();
    for f in env.repo_objects("index") {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_file(env.repo().join("snapshots").join(&first)).unwrap();

    // Check tells the interrupted run's valid tree pack from the forgery.
    let r = env.run(&["check"]).fails(1);
    assert!(
        r.stderr().contains(&forged) && r.stderr().contains("is not a valid pack"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("1 pack(s) are not indexed yet"),
        "{}",
        r.stderr()
    );

    // The next backup does not deduplicate against the zeros.
    env.backup(&[&src]);
    env.restore_matches("latest", &src);
    let r = env.run(&["check", "--read-data"]).fails(1);
    let errors = r.stderr().lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(errors, 1, "{}", r.stderr());
    assert!(r.stderr().contains(&forged), "{}", r.stderr());
}

#[test]
fn stray_objects_under_packs_are_named_by_check() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let garbage = put(&env, "packs", &b"garbage ".repeat(100));
    std::fs::write(env.repo().join("packs/00/stray-file"), "x").unwrap();
    let r = env.run(&["check"]).fails(1);
    assert!(
        r.stderr()
            .contains(&format!("pack {garbage} is not a valid pack"))
            && r.stderr().contains("pack stray-file is not a valid pack"),
        "{}",
        r.stderr()
    );
    assert!(!r.stderr().contains("not indexed yet"), "{}", r.stderr());
    env.backup(&[&src]);
    env.restore_matches("latest", &src);
}
