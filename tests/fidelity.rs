//! Fidelity: a tree with every kind of entry and metadata, backed up and
//! restored, must come back with zero differences in any field.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use util::{Env, sh, under};

/// Builds the tricky tree at `root` (as root: devices, owners, trusted xattrs).
pub fn build_tricky_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let r = root.display();
    sh(&format!(
        r#"
cd {r}
echo regular > regular
: > empty
# Sparse: 64 MiB with three written blocks, and a file ending in a hole.
truncate -s 64M sparse
printf 'start' | dd of=sparse bs=1 conv=notrunc status=none
printf 'middle' | dd of=sparse bs=1 seek=20971520 conv=notrunc status=none
printf 'end' | dd of=sparse bs=1 seek=67108000 conv=notrunc status=none
printf 'head' > trailing-hole && truncate -s 10M trailing-hole
# Hard links across directories.
mkdir -p links/a links/b
echo linked > links/a/one
ln links/a/one links/b/two
ln links/a/one links/three
# Symlinks.
ln -s regular rel-link
ln -s /etc/passwd abs-link
ln -s does/not/exist dangling
ln -s "$(printf 'tar\377get\001')" nonutf8-link
ln -s "$(head -c 3000 /dev/zero | tr '\0' 'x')" long-link
# Special files.
mkfifo fifo
mknod chardev c 1 3
mknod blockdev b 7 200
# Modes.
echo s > setuid && chmod 4755 setuid
echo g > setgid && chmod 2755 setgid
mkdir sticky && chmod 1777 sticky
echo z > mode000 && chmod 000 mode000
mkdir dir000 && echo inside > dir000/f
# Owners nobody has here.
echo o > foreign && chown 12345:54321 foreign
ln -s regular foreign-link && chown -h 23456:65432 foreign-link
# Times: nanoseconds, before 1970, far future.
echo t > nanos && touch -d '2021-06-01 12:34:56.123456789' nanos
echo t > old && touch -d '1960-01-01 00:00:00.5' old
echo t > future && touch -d '2200-01-01 00:00:00' future
touch -h -d '2001-02-03 04:05:06.7' rel-link
# Extended attributes: user on a file and a directory, trusted on a symlink.
echo x > xattrs && setfattr -n user.comment -v 'hello' xattrs && setfattr -n user.bin -v 0x00ff00 xattrs
mkdir xdir && setfattr -n user.dirattr -v 'on a dir' xdir
setfattr -h -n trusted.linkattr -v 'on a link' rel-link
# POSIX ACLs, a default ACL among them.
echo a > acl && setfacl -m u:1234:rwx,g:4321:r acl
mkdir acldir && setfacl -m u:1234:rx acldir && setfacl -d -m u:1234:rwx,g::r acldir
echo inherits > acldir/child
# Awkward names.
mkdir names
echo n > "names/$(printf 'caf\351')"
echo n > "names/$(head -c 255 /dev/zero | tr '\0' 'n')"
echo n > "names/$(printf 'new\nline')"
echo n > "names/-dash"
# Deep nesting.
d=deep; for i in $(seq 1 60); do d=$d/d$i; done; mkdir -p $d && echo bottom > $d/file
chmod 000 dir000
touch -d '2010-10-10 10:10:10.101010101' links sticky xdir names
"#
    ));
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
    nlink: u64,
    target: Vec<u8>,
    content: Option<Vec<u8>>,
    data_regions: Vec<(u64, u64)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn data_regions(p: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p).unwrap();
    let size = f.metadata().unwrap().len() as i64;
    let mut out = Vec::new();
    let mut pos = 0i64;
    while pos < size {
        // SAFETY: lseek on an open descriptor.
        let d = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        if d < 0 {
            break;
        }
        let h = unsafe { libc::lseek(f.as_raw_fd(), d, libc::SEEK_HOLE) };
        out.push((d as u64, h as u64));
        pos = h;
    }
    out
}

/// Every field of every entry under `root`, and the hard-link groups.
type Survey = (BTreeMap<Vec<u8>, Entry>, BTreeSet<Vec<Vec<u8>>>);

fn survey(root: &Path) -> Survey {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let key = rel.as_os_str().as_bytes().to_vec();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        } else if m.nlink() > 1 {
            inodes.entry(m.ino()).or_default().push(key.clone());
        }
        let e = Entry {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: if ft.is_dir() { 0 } else { m.size() },
            mtime: (m.mtime(), m.mtime_nsec()),
            rdev: m.rdev(),
            nlink: if ft.is_dir() { 0 } else { m.nlink() },
            target: if ft.is_symlink() {
                std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
            } else {
                vec![]
            },
            content: if ft.is_file() {
                Some(std::fs::read(&p).unwrap())
            } else {
                None
            },
            data_regions: if ft.is_file() { data_regions(&p) } else { vec![] },
            xattrs: strongroom::fs::meta::read_xattrs(&p).unwrap(),
        };
        entries.insert(key, e);
    }
    let groups = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    (entries, groups)
}

fn compare(src: &Path, dst: &Path) -> Vec<String> {
    let (a, ga) = survey(src);
    let (b, gb) = survey(dst);
    let mut diffs = Vec::new();
    for (k, ea) in &a {
        let name = String::from_utf8_lossy(k);
        match b.get(k) {
            None => diffs.push(format!("{name}: missing")),
            Some(eb) if ea != eb => {
                let mut fields = Vec::new();
                macro_rules! f {
                    ($($x:ident),*) => { $( if ea.$x != eb.$x { fields.push(format!("{} {:?} != {:?}", stringify!($x), ea.$x, eb.$x)); } )* };
                }
                f!(
                    mode,
                    uid,
                    gid,
                    size,
                    mtime,
                    rdev,
                    nlink,
                    target,
                    data_regions,
                    xattrs
                );
                if ea.content != eb.content {
                    fields.push("content".into());
                }
                diffs.push(format!("{name}: {}", fields.join("; ")));
            }
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diffs.push(format!("{}: unexpected", String::from_utf8_lossy(k)));
    }
    if ga != gb {
        diffs.push(format!("hard-link groups differ: {ga:?} vs {gb:?}"));
    }
    diffs
}

#[test]
fn tricky_tree_restores_with_zero_differences() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_tricky_tree(&src);
    let summary = env.backup(&[&src]);
    assert_eq!(summary["errors"], 0);
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let restored = under(&target, &src);

    let diffs = compare(&src, &restored);
    assert!(
        diffs.is_empty(),
        "{} difference(s):\n{}",
        diffs.len(),
        diffs.join("\n")
    );

    // An independent opinion: rsync with hard links, ACLs, xattrs, checksums.
    let out = std::process::Command::new("rsync")
        .args(["-aHAXn", "--numeric-ids", "--checksum", "--itemize-changes"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", restored.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "rsync reports differences:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The sparse file's holes are holes: few blocks allocated.
    let m = std::fs::metadata(restored.join("sparse")).unwrap();
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file restored with {} blocks",
        m.blocks()
    );

    // The comparison itself can fail: a one-nanosecond change is caught.
    sh(&format!(
        "touch -h -d '2021-06-01 12:34:56.123456788' {}",
        restored.join("nanos").display()
    ));
    let diffs = compare(&src, &restored);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].starts_with("nanos: mtime"), "{diffs:?}");
}
