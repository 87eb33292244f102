//! The core's fidelity comparison: every field of every entry of two
//! trees (type and mode, owner, size, content, mtime in ns, rdev, symlink
//! target bytes, data regions of sparse files, xattrs and ACLs, hard-link
//! groups), as a list of differences.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

pub fn compare(src: &Path, dst: &Path) -> Vec<String> {
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

/// Panics, listing them, if `dst` differs from `src` in anything compared.
pub fn no_differences(src: &Path, dst: &Path) {
    let diffs = compare(src, dst);
    assert!(
        diffs.is_empty(),
        "{} difference(s):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
