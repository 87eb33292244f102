//! What a host holding only a writer key can make the administrator's
//! restore do: snapshots built for real with the writer key (signed by it,
//! sealed under the real subkeys and run keys), and shown refused or
//! contained below the restore target.

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use strongroom::cache::Cache;
use strongroom::format::manifest::{Catalog, Summary};
use strongroom::format::tree::{Extent, Node, NodeKind, TREE_VERSION, Tree};
use strongroom::format::{BlobKind, Id, Timestamp, encode};
use strongroom::repository::Repository;
use strongroom::repository::writer::Writer;
use util::Env;

fn node(name: &[u8], kind: NodeKind, mode: u32) -> Node {
    let mut n = Node::new(name, kind, mode);
    n.mtime = Timestamp {
        sec: 1_600_000_000,
        nsec: 0,
    };
    n
}

/// Writes a snapshot whose root holds directory `evil` with `nodes` as its
/// (raw, unchecked) entries, the way a writer-key holder can with the
/// library: one run, its envelope, packs, index and a signed manifest.
fn hostile_snapshot(env: &Env, build: impl FnOnce(&Writer) -> Vec<Node>) -> String {
    let key = strongroom::keys::load(&env.keys.writer, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend, key.shared()).unwrap();
    let cache = Cache::open(Some(&env.path("attacker-cache")));
    let writer = Writer::begin(&repo, &key, &cache).unwrap();
    let nodes = build(&writer);
    let tree = |nodes: Vec<Node>| {
        let bytes = encode(&Tree {
            version: TREE_VERSION,
            nodes,
        });
        writer.add_blob(BlobKind::Tree, &bytes).unwrap()
    };
    let evil = tree(nodes);
    let mut dir = node(b"evil", NodeKind::Dir, libc::S_IFDIR | 0o755);
    dir.subtree = Some(evil);
    let root = tree(vec![dir]);
    let now = Timestamp::now();
    let catalog = Catalog {
        time: now,
        started: now,
        host: "writer-host".into(),
        paths: vec![b"/evil".to_vec()],
        tags: Vec::new(),
        parent: None,
        tree: root,
        summary: Summary::default(),
    };
    let (id, _) = writer.finish(catalog).unwrap();
    id.to_hex()
}

fn file(w: &Writer, name: &[u8], mode: u32, content: &[u8]) -> Node {
    let id: Id = w.add_blob(BlobKind::Data, content).unwrap();
    let mut n = node(name, NodeKind::File, libc::S_IFREG | mode);
    n.size = content.len() as u64;
    n.content = vec![Extent::Data {
        id,
        len: content.len() as u32,
    }];
    n
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "written outside the target: {left:?}");
}

#[test]
fn a_writer_cannot_make_restore_write_through_its_own_symlink() {
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let planted = outside.join("planted").to_str().unwrap().as_bytes().to_vec();
    // `x -> outside`, then thousands of entries to win the race of a
    // parallel restore, then a setuid-root file `x` again.
    let id = hostile_snapshot(&env, |w| {
        let mut link = node(b"x", NodeKind::Symlink, libc::S_IFLNK | 0o777);
        link.target = planted.clone();
        let mut nodes = vec![link];
        for i in 0..3000 {
            nodes.push(node(
                format!("y{i:05}").as_bytes(),
                NodeKind::Fifo,
                libc::S_IFIFO | 0o644,
            ));
        }
        nodes.push(file(w, b"x", 0o4755, b"#!/bin/sh\nid\n"));
        nodes
    });
    let target = env.path("target");
    let r = env
        .run(&["restore", &id, "--target", target.to_str().unwrap()])
        .fails(1);
    assert!(
        r.stderr().contains("is damaged") && r.stderr().contains("evil"),
        "{}",
        r.stderr()
    );
    assert_empty(&outside);
    // ls and check see the same refusal.
    let r = env.run(&["ls", &id, "/evil"]).fails(1);
    assert!(r.stderr().contains("is damaged"), "{}", r.stderr());
    let r = env.run(&["check"]).fails(1);
    assert!(r.stderr().contains("is damaged"), "{}", r.stderr());
}

#[test]
fn names_that_leave_their_directory_are_refused() {
    for bad in [&b".."[..], b".", b"", b"a/b", b"../../escape", b"nul\0byte"] {
        let env = Env::new();
        env.init();
        let outside = env.path("outside");
        std::fs::create_dir(&outside).unwrap();
        let id = hostile_snapshot(&env, |w| vec![file(w, bad, 0o644, b"payload")]);
        let target = env.path("t/inner");
        std::fs::create_dir_all(&target).unwrap();
        let r = env
            .run(&["restore", &id, "--target", target.to_str().unwrap()])
            .fails(1);
        assert!(r.stderr().contains("is damaged"), "{bad:?}: {}", r.stderr());
        assert_empty(&outside);
        assert_eq!(
            std::fs::read_dir(env.path("t")).unwrap().count(),
            1,
            "{bad:?}: nothing beside the target"
        );
    }
}

#[test]
fn symlinks_already_in_the_target_are_replaced_not_followed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/inner"), "inner\n").unwrap();
    std::fs::write(src.join("file"), "file\n").unwrap();
    std::fs::set_permissions(src.join("file"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    env.backup(&[&src]);

    // A victim outside the target, reached by symlinks planted inside it
    // where the snapshot has a directory and a file.
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("file"), "victim\n").unwrap();
    std::fs::set_permissions(outside.join("file"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let target = env.path("target");
    let restored = util::under(&target, &src);
    std::fs::create_dir_all(&restored).unwrap();
    std::os::unix::fs::symlink(&outside, restored.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("file"), restored.join("file")).unwrap();
    // And one on the way to a SNAPSHOT:PATH restore.
    let t2 = env.path("target2");
    std::fs::create_dir(&t2).unwrap();
    let first = src.iter().nth(1).unwrap();
    std::os::unix::fs::symlink(&outside, t2.join(first)).unwrap();

    let r = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert!(r.stderr().contains("replaced the symlink"), "{}", r.stderr());
    env.run(&[
        "restore",
        &format!("latest:{}", src.join("file").display()),
        "--target",
        t2.to_str().unwrap(),
    ])
    .ok();

    assert_eq!(std::fs::read_to_string(outside.join("file")).unwrap(), "victim\n");
    assert_eq!(
        std::fs::metadata(outside.join("file")).unwrap().mode() & 0o7777,
        0o600
    );
    assert!(!outside.join("inner").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    for t in [&target, &t2] {
        let f = util::under(t, &src.join("file"));
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert!(m.file_type().is_file(), "{}", f.display());
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "file\n");
    }
    let d = restored.join("dir");
    assert!(std::fs::symlink_metadata(&d).unwrap().is_dir());
    assert_eq!(std::fs::read_to_string(d.join("inner")).unwrap(), "inner\n");
}

#[test]
fn a_restore_target_that_is_a_file_or_read_only_gets_one_sentence() {
    let env = Env::new();
    env.init();
    let src = util::sample(&env);
    env.backup(&[&src]);
    std::fs::write(env.path("afile"), "x").unwrap();
    let r = env.run(&["restore", "latest", "--target", "afile"]).fails(2);
    assert!(r.stderr().contains("not a directory"), "{}", r.stderr());
    assert!(!r.stderr().contains("restored"), "{}", r.stderr());

    let ro = env.path("ro");
    let _tmpfs = util::Tmpfs::mount(&ro, "1m");
    util::sh(&format!("mount -o remount,ro {}", ro.display()));
    let r = env
        .run(&["restore", "latest", "--target", ro.to_str().unwrap()])
        .fails(1);
    let err = r.stderr();
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn index_entries_with_impossible_lengths_are_refused_before_any_allocation() {
    let env = Env::new();
    env.init();
    let src = util::sample(&env);
    env.backup(&[&src]);
    // A writer (with the storage's help) replaces the index with one that
    // places every blob where it is, but 4 GiB long.
    let key = strongroom::keys::load(&env.keys.writer, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend.clone(), key.shared()).unwrap();
    let names: Vec<String> = env
        .repo_objects("index")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut packs = Vec::new();
    for n in &names {
        let f = strongroom::repository::index::read_index_file(
            backend.as_ref(),
            &key.shared().subkeys,
            &repo.id(),
            n,
        )
        .unwrap();
        packs.extend(f.packs);
        std::fs::remove_file(env.repo().join("index").join(n)).unwrap();
    }
    for p in &mut packs {
        for b in &mut p.blobs {
            b.length = u32::MAX;
            b.raw_length = u32::MAX;
        }
    }
    strongroom::repository::index::write_index_file(
        backend.as_ref(),
        &key.shared().subkeys,
        &repo.id(),
        packs,
    )
    .unwrap();
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let r = env.run(&["restore", "latest", "--target", "out"]).fails(1);
    assert!(
        r.stderr().contains("index entry") && r.stderr().contains("is damaged"),
        "{}",
        r.stderr()
    );
    let r = env.run(&["check", "--read-data"]).fails(1);
    assert!(r.stderr().contains("is damaged"), "{}", r.stderr());
}

#[test]
fn an_index_file_naming_real_packs_with_no_blobs_hides_nothing() {
    let env = Env::new();
    env.init();
    let src = util::sample(&env);
    let root_tree = {
        env.backup(&[&src]);
        env.snapshots()[0]["tree"].as_str().unwrap().to_string()
    };
    let key = strongroom::keys::load(&env.keys.writer, &Default::default()).unwrap();
    let backend = Arc::new(strongroom::backend::local::Local::new(env.repo()));
    let repo = Repository::open(backend.clone(), key.shared()).unwrap();
    let mut packs = Vec::new();
    for p in env.repo_objects("packs") {
        packs.push(strongroom::format::index::PackEntries {
            pack: Id::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap(),
            size: std::fs::metadata(&p).unwrap().len(),
            blobs: Vec::new(),
        });
    }
    // And a location claiming the root tree is a data blob.
    let mut fake = packs[0].clone();
    fake.pack = Id([7; 32]);
    fake.blobs.push(strongroom::format::index::BlobEntry {
        id: Id::from_hex(&root_tree).unwrap(),
        kind: BlobKind::Data,
        run: strongroom::format::RunId([1; 16]),
        offset: 0,
        length: 100,
        raw_length: 100,
    });
    packs.push(fake);
    // Written until its name sorts before every honest index file.
    let honest: Vec<String> = env
        .repo_objects("index")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    loop {
        let id = strongroom::repository::index::write_index_file(
            backend.as_ref(),
            &key.shared().subkeys,
            &repo.id(),
            packs.clone(),
        )
        .unwrap()
        .to_hex();
        if honest.iter().all(|h| id < *h) {
            break;
        }
        std::fs::remove_file(env.repo().join("index").join(id)).unwrap();
    }
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    env.restore_matches("latest", &src);
    env.run(&["repair", "index"]).ok();
    env.restore_matches("latest", &src);
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn a_chain_of_directories_too_deep_is_refused_without_a_crash() {
    let env = Env::new();
    env.init();
    // 100,000 nested directories `a`, each tree one blob.
    let id = hostile_snapshot(&env, |w| {
        let mut below = None;
        for _ in 0..100_000 {
            let mut a = node(b"a", NodeKind::Dir, libc::S_IFDIR | 0o755);
            a.subtree = Some(below.unwrap_or_else(|| {
                let empty = encode(&Tree {
                    version: TREE_VERSION,
                    nodes: vec![],
                });
                w.add_blob(BlobKind::Tree, &empty).unwrap()
            }));
            let bytes = encode(&Tree {
                version: TREE_VERSION,
                nodes: vec![a.clone()],
            });
            below = Some(w.add_blob(BlobKind::Tree, &bytes).unwrap());
        }
        let mut top = node(b"a", NodeKind::Dir, libc::S_IFDIR | 0o755);
        top.subtree = below;
        vec![top]
    });
    let r = env.run(&["restore", &id, "--target", "deep"]).fails(1);
    assert!(r.stderr().contains("deeper than"), "{}", r.stderr());
    let r = env.run(&["repair", "snapshots", "--dry-run"]).fails(1);
    assert!(r.stderr().contains("deeper than"), "{}", r.stderr());
    let r = env.run(&["check"]).fails(1);
    assert!(r.stderr().contains("deeper than"), "{}", r.stderr());
}
