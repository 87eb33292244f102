//! Damaged storage breaks only what it touches: a garbage object is named
//! by `check` and skipped by everything else, a lost or truncated pack never
//! spreads into new snapshots, and `repair` saves what survives.

mod util;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strongroom::format::Id;
use util::{Env, sample, under};

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

fn xattr(path: &Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated, the buffer is ours and its
    // length is passed.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| String::from_utf8_lossy(&buf[..r as usize]).into_owned())
}

fn id_of(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().unwrap().to_string()
}

#[test]
fn a_lost_pack_never_spreads_and_repair_keeps_what_survives() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    util::random_file(&src.join("kept.bin"), 9 << 20, 1);
    util::random_file(&src.join("dir/gone.bin"), 9 << 20, 2);
    std::fs::write(src.join("small.txt"), "small and fine\n").unwrap();
    let first = id_of(&env.backup(&[&src]));
    let gone = std::fs::read(src.join("dir/gone.bin")).unwrap();

    // A full data pack is lost; one of its files is gone from the source.
    let (pack, pack_name) = env.largest_pack();
    std::fs::remove_file(&pack).unwrap();
    std::fs::remove_file(src.join("dir/gone.bin")).unwrap();

    // The next backup uploads what the lost pack held again: its snapshot
    // restores completely.
    let w = env.backup(&[&src]);
    assert!(w["bytes_added"].as_u64().unwrap() > 1 << 20, "{w}");
    let second = id_of(&w);
    env.restore_matches(&second, &src);
    let r = env.run(&["check"]).fails(1);
    assert!(r.stderr().contains(&pack_name), "{}", r.stderr());

    // The first snapshot's file whose data was in that pack fails to
    // restore: what was written of it stays its creator's alone (0600),
    // not the bits it would have had; the rest comes back with theirs.
    let t = env.path("out-first");
    let r = env
        .run(&["restore", &first, "--target", t.to_str().unwrap()])
        .fails(1);
    assert!(r.stderr().contains("gone.bin"), "{}", r.stderr());
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&under(&t, &src.join("dir/gone.bin"))), 0o600);
    let kept = src.join("kept.bin");
    assert_ne!(mode(&kept), 0o600);
    assert_eq!(mode(&under(&t, &kept)), mode(&kept));

    let r = env.run(&["repair", "index"]).ok();
    assert!(
        r.stdout().contains(&pack_name) && r.stdout().contains("missing"),
        "{}",
        r.stdout()
    );
    let r = env.run(&["repair", "index"]).ok();
    assert!(r.stdout().contains("nothing to repair"), "{}", r.stdout());
    env.writer(&["repair", "snapshots"]).fails(2);
    let r = env.run(&["repair", "snapshots", "--dry-run"]).ok();
    assert!(r.stdout().contains("would be rewritten"), "{}", r.stdout());
    assert_eq!(env.snapshots().as_array().unwrap().len(), 2);
    let r = env.run(&["repair", "snapshots", "--forget"]).ok();
    let out = r.stdout();
    assert!(
        out.contains(&first[..8]) && out.contains("dir/gone.bin") && !out.contains(&second[..8]),
        "{out}"
    );

    let snaps = env.snapshots();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps.iter().all(|s| s["id"] != first.as_str()));
    let repaired = snaps
        .iter()
        .find(|s| s["tags"] == serde_json::json!(["repaired"]))
        .expect("a repaired snapshot");
    assert_eq!(repaired["signed_by"], "root");
    let repaired = repaired["id"].as_str().unwrap();

    // Every snapshot restores as far as its data survives.
    env.restore_matches(&second, &src);
    let target = env.path("out-repaired");
    env.run(&["restore", repaired, "--target", target.to_str().unwrap()])
        .ok();
    let kept = std::fs::read(under(&target, &src.join("kept.bin"))).unwrap();
    assert_eq!(kept, std::fs::read(src.join("kept.bin")).unwrap());
    assert_eq!(
        xattr(&under(&target, &src.join("kept.bin")), "user.strongroom.damaged"),
        None
    );
    let damaged = under(&target, &src.join("dir/gone.bin"));
    let back = std::fs::read(&damaged).unwrap();
    assert_eq!(back.len(), gone.len(), "a damaged file keeps its size");
    assert!(back.iter().zip(&gone).all(|(b, g)| b == g || *b == 0));
    let mark = xattr(&damaged, "user.strongroom.damaged").expect("the damaged file is marked");
    let lost: u64 = mark.split(' ').next().unwrap().parse().unwrap();
    let zeros_now = back.iter().zip(&gone).filter(|(b, g)| b != g).count() as u64;
    assert!(
        lost > 0 && lost <= gone.len() as u64 && lost >= zeros_now,
        "{mark}"
    );
    assert_eq!(
        std::fs::read_to_string(under(&target, &src.join("small.txt"))).unwrap(),
        "small and fine\n"
    );
    env.run(&["check", "--read-data"]).ok();
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

#[test]
fn a_blob_whose_first_location_fails_is_read_from_the_next() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    // Index entries (written with the real index subkey) that place every
    // blob first in a pack that does not exist, as a lost pack's entries
    // would: the reader must go on to the real location.
    let key = strongroom::keys::load(&env.keys.full, &Default::default()).unwrap();
    let shared = key.shared();
    let backend = strongroom::backend::open(env.repo().to_str().unwrap(), &Default::default()).unwrap();
    let repo = strongroom::repository::Repository::open(backend.clone(), shared).unwrap();
    let real: Vec<String> = env
        .repo_objects("index")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut lost = Vec::new();
    for name in &real {
        let file = strongroom::repository::index::read_index_file(
            backend.as_ref(),
            &shared.subkeys,
            &repo.id(),
            name,
        )
        .unwrap();
        for (i, mut p) in file.packs.into_iter().enumerate() {
            p.pack = Id([i as u8; 32]);
            lost.push(p);
        }
    }
    // Index files are read in name order: keep the one that sorts first.
    let first = real.iter().min().unwrap().clone();
    let written = (0..200)
        .find_map(|_| {
            let id = strongroom::repository::index::write_index_file(
                backend.as_ref(),
                &shared.subkeys,
                &repo.id(),
                lost.clone(),
            )
            .unwrap()
            .to_hex();
            if id < first {
                Some(id)
            } else {
                std::fs::remove_file(env.repo().join("index").join(&id)).unwrap();
                None
            }
        })
        .expect("an index file name that sorts first");
    let r = env.run(&["check"]).fails(1);
    assert!(
        r.stderr().contains("missing from the repository"),
        "{}",
        r.stderr()
    );
    env.restore_matches("latest", &src);
    // A table built afresh in a new cache directory gives the same result.
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    env.restore_matches("latest", &src);
    assert!(env.repo().join("index").join(written).exists());
}

#[test]
fn repair_snapshots_rewrites_nothing_it_could_not_read() {
    let env = Env::new();
    env.init();
    let src = util::sample(&env);
    let id = id_of(&env.backup(&[&src]));
    // The storage hides the key envelopes for the length of one repair
    // (and the run keys are not in the cache): nothing is lost, only
    // unreadable for now.
    let keys = env.repo().join("keys");
    let aside = env.path("keys-aside");
    std::fs::rename(&keys, &aside).unwrap();
    std::fs::create_dir(&keys).unwrap();
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let r = env.run(&["repair", "snapshots", "--forget"]).fails(1);
    assert!(r.stderr().contains("left as it is"), "{}", r.stderr());
    std::fs::remove_dir(&keys).unwrap();
    std::fs::rename(&aside, &keys).unwrap();
    let snaps = env.snapshots();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());
    env.restore_matches(&id, &src);
}

#[test]
fn a_giant_object_under_packs_is_refused_by_its_size_not_read() {
    let env = Env::new();
    env.init();
    let src = util::sample(&env);
    env.backup(&[&src]);
    // 4 GiB (sparse) under a pack's name: reading it whole would take the
    // memory of the machine.
    let name = "ab".repeat(32);
    let giant = env.repo().join("packs/ab").join(&name);
    std::fs::File::create(&giant).unwrap().set_len(4 << 30).unwrap();
    env.backup(&[&src]);
    let r = env.run(&["check"]).fails(1);
    assert!(
        r.stderr().contains(&name) && r.stderr().contains("refused"),
        "{}",
        r.stderr()
    );
    env.restore_matches("latest", &src);
}

/// Where the blob of a one-blob file lies: its pack's path and its
/// entry, found through the real index with the real subkeys.
fn blob_of(env: &Env, content: &[u8]) -> (std::path::PathBuf, strongroom::format::index::BlobEntry) {
    let key = strongroom::keys::load(&env.keys.full, &Default::default()).unwrap();
    let shared = key.shared();
    let id = Id(strongroom::crypto::subkeys::hmac(
        &shared.subkeys.blob_id,
        content,
    ));
    let backend = strongroom::backend::open(env.repo().to_str().unwrap(), &Default::default()).unwrap();
    let repo = strongroom::repository::Repository::open(backend.clone(), shared).unwrap();
    for p in env.repo_objects("index") {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let file = strongroom::repository::index::read_index_file(
            backend.as_ref(),
            &shared.subkeys,
            &repo.id(),
            &name,
        )
        .unwrap();
        for pack in file.packs {
            if let Some(e) = pack.blobs.iter().find(|b| b.id == id) {
                let hex = pack.pack.to_hex();
                return (env.repo().join("packs").join(&hex[..2]).join(&hex), *e);
            }
        }
    }
    panic!("no index entry for the blob");
}

#[test]
fn a_damaged_blob_read_with_its_neighbours_fails_only_its_own_file() {
    // Small files of one directory lie side by side in a pack, and restore
    // reads them with one ranged read: damage to one of them, or a pack cut
    // short among them, must fail only the files it touches.
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..40 {
        util::random_file(
            &src.join(format!("many/n{i:02}.dat")),
            3000 + 97 * i,
            100 + i as u64,
        );
    }
    env.backup(&[&src]);
    let content = |i: usize| std::fs::read(src.join(format!("many/n{i:02}.dat"))).unwrap();
    let located: Vec<_> = (0..40).map(|i| blob_of(&env, &content(i))).collect();
    let (pack, _) = &located[0];
    assert!(
        located.iter().all(|(p, _)| p == pack),
        "the small files are in one pack"
    );

    // A byte of one blob, in the middle of its neighbours, is flipped.
    let (_, hit) = &located[17];
    util::flip_byte(pack, hit.offset as u64 + hit.length as u64 / 2);
    let t = env.path("out-flipped");
    let r = env
        .run(&["restore", "latest", "--target", t.to_str().unwrap()])
        .fails(1);
    assert!(
        r.stderr().contains("n17.dat") && r.stderr().contains(&hit.id.to_string()),
        "{}",
        r.stderr()
    );
    for i in (0..40).filter(|&i| i != 17) {
        let got = std::fs::read(under(&t, &src.join(format!("many/n{i:02}.dat")))).unwrap();
        assert!(got == content(i), "n{i:02}.dat restored wrong");
    }
    for i in (0..40).filter(|&i| i != 17) {
        assert!(!r.stderr().contains(&format!("n{i:02}.dat")), "{}", r.stderr());
    }
    util::flip_byte(pack, hit.offset as u64 + hit.length as u64 / 2);

    // The pack is cut short right after one blob: the files before the cut
    // still come back, each of the others fails with its own error.
    let cut = located[20].1.offset as u64 + located[20].1.length as u64;
    let whole = std::fs::read(pack).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(pack)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let t = env.path("out-cut");
    let r = env
        .run(&["restore", "latest", "--target", t.to_str().unwrap()])
        .fails(1);
    for (i, (_, e)) in located.iter().enumerate() {
        let name = format!("n{i:02}.dat");
        let at = under(&t, &src.join(format!("many/{name}")));
        if e.offset as u64 + e.length as u64 <= cut {
            assert!(std::fs::read(&at).unwrap() == content(i), "{name} restored wrong");
            assert!(!r.stderr().contains(&name), "{}", r.stderr());
        } else {
            assert!(r.stderr().contains(&name), "{name} not reported: {}", r.stderr());
        }
    }
    std::fs::write(pack, whole).unwrap();
    env.restore_matches("latest", &src);
}

/// `check --read-data` reads a local pack a piece at a time (2 MiB), opening
/// each blob as soon as it has all arrived: a pack of several pieces checks
/// clean, and a byte flipped in its third piece, or the pack cut short,
/// is one error naming the pack.
#[test]
fn check_reads_a_large_pack_in_pieces_and_names_it_when_damaged() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    util::random_file(&src.join("big.bin"), 7 << 20, 41);
    env.backup(&[&src]);
    env.run(&["check", "--read-data"]).ok();
    let (pack, name) = env.largest_pack();
    let size = std::fs::metadata(&pack).unwrap().len();
    assert!(size > 6 << 20, "one pack holds the file: {size} bytes");

    util::flip_byte(&pack, 5 << 20);
    let stderr = env.run(&["check", "--read-data"]).fails(1).stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&name) && errors[0].contains("does not match its name"),
        "{stderr}"
    );
    util::flip_byte(&pack, 5 << 20);
    env.run(&["check", "--read-data"]).ok();

    let whole = std::fs::read(&pack).unwrap();
    std::fs::write(&pack, &whole[..(3 << 20) + 5]).unwrap();
    let r = env.run(&["check", "--read-data"]).fails(1);
    assert!(r.stderr().contains(&name), "{}", r.stderr());
}
