//! `strongroom mount`: what a snapshot looks like through the mount (every
//! field of the tricky tree, xattrs, large directories), and that nothing
//! can be changed or reached without leave.

mod util;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use util::fuse::{errno_of, ls, mount, output};
use util::{Env, build_tricky_tree, sample, sh, under};

fn rsync_differences(a: &Path, b: &Path) -> String {
    output(
        Command::new("rsync")
            .args(["-aHAXn", "--numeric-ids", "--checksum", "--itemize-changes"])
            .arg(format!("{}/", a.display()))
            .arg(format!("{}/", b.display())),
    )
}

/// `stat` of every entry under `root`: type and mode, owner, blocks, links,
/// device numbers, mtime in ns; sizes of all but directories (a
/// directory's size is its filesystem's business). Access times are left
/// out: reading the source for the backup moved them.
fn stat_lines(root: &Path) -> String {
    let script = format!(
        "cd {} && find . -print0 | sort -z | xargs -0 stat -c '%n %f %u %g %b %h %t:%T %y' \
         && find . ! -type d -print0 | sort -z | xargs -0 stat -c '%n %s'",
        root.display()
    );
    output(Command::new("sh").arg("-c").arg(script))
}

fn getfattr(root: &Path) -> String {
    let script = format!(
        "cd {} && getfattr -R -P -d -m - -e hex . 2>/dev/null | sort",
        root.display()
    );
    output(Command::new("sh").arg("-c").arg(script))
}

fn inode_of(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn tricky_tree_reads_through_the_mount_with_no_difference() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_tricky_tree(&src);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let mut m = mount(&env, &at, &["--snapshot", "latest"]);
    let seen = under(&at, &src);

    let diff = rsync_differences(&src, &seen);
    assert!(diff.is_empty(), "rsync reports differences:\n{diff}");
    assert_eq!(stat_lines(&src), stat_lines(&seen));
    assert_eq!(getfattr(&src), getfattr(&seen));
    for l in ["nonutf8-link", "long-link", "rel-link", "abs-link"] {
        assert_eq!(
            std::fs::read_link(src.join(l)).unwrap(),
            std::fs::read_link(seen.join(l)).unwrap()
        );
    }
    for f in ["sparse", "trailing-hole", "regular", "setuid"] {
        sh(&format!(
            "cmp {} {}",
            src.join(f).display(),
            seen.join(f).display()
        ));
    }
    let one = inode_of(&seen.join("links/a/one"));
    assert_eq!(one, inode_of(&seen.join("links/b/two")));
    assert_eq!(one, inode_of(&seen.join("links/three")));
    assert_eq!(std::fs::metadata(seen.join("links/three")).unwrap().nlink(), 3);
    let before: Vec<u64> = ["regular", "links/a/one", "names", "deep"]
        .iter()
        .map(|p| inode_of(&seen.join(p)))
        .collect();

    // cp -a out of the mount reproduces the tree.
    let out = env.path("copied");
    sh(&format!("cp -a {} {}", seen.display(), out.display()));
    let diff = rsync_differences(&src, &out);
    assert!(diff.is_empty(), "rsync reports differences after cp -a:\n{diff}");

    // The same inode numbers after a remount.
    let (code, _) = m.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    drop(m);
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let after: Vec<u64> = ["regular", "links/a/one", "names", "deep"]
        .iter()
        .map(|p| inode_of(&seen.join(p)))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn every_write_operation_fails_with_erofs() {
    let env = Env::new();
    env.init();
    let src = sample(&env);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let dir = under(&at, &src);
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
    let (file, sub, new) = (
        c(&dir.join("hello.txt")),
        c(&dir.join("docs")),
        c(&dir.join("new")),
    );
    let name = CString::new("user.x").unwrap();
    // SAFETY: every pointer is a NUL-terminated string or buffer alive for
    // the call.
    let results = unsafe {
        [
            (
                "create",
                errno_of(libc::open(new.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644)),
            ),
            ("mkdir", errno_of(libc::mkdir(new.as_ptr(), 0o755))),
            (
                "mknod",
                errno_of(libc::mknod(new.as_ptr(), libc::S_IFIFO | 0o644, 0)),
            ),
            ("unlink", errno_of(libc::unlink(file.as_ptr()))),
            ("rmdir", errno_of(libc::rmdir(sub.as_ptr()))),
            ("rename", errno_of(libc::rename(file.as_ptr(), new.as_ptr()))),
            ("chmod", errno_of(libc::chmod(file.as_ptr(), 0o600))),
            ("chown", errno_of(libc::chown(file.as_ptr(), 1, 1))),
            ("truncate", errno_of(libc::truncate(file.as_ptr(), 0))),
            (
                "utimens",
                errno_of(libc::utimensat(
                    libc::AT_FDCWD,
                    file.as_ptr(),
                    std::ptr::null(),
                    0,
                )),
            ),
            (
                "setxattr",
                errno_of(libc::setxattr(
                    file.as_ptr(),
                    name.as_ptr(),
                    b"v".as_ptr().cast(),
                    1,
                    0,
                )),
            ),
            (
                "removexattr",
                errno_of(libc::removexattr(file.as_ptr(), name.as_ptr())),
            ),
            ("link", errno_of(libc::link(file.as_ptr(), new.as_ptr()))),
            ("symlink", errno_of(libc::symlink(file.as_ptr(), new.as_ptr()))),
            (
                "open for writing",
                errno_of(libc::open(file.as_ptr(), libc::O_WRONLY)),
            ),
            (
                "open read-write",
                errno_of(libc::open(file.as_ptr(), libc::O_RDWR)),
            ),
        ]
    };
    for (what, errno) in results {
        assert_eq!(errno, libc::EROFS, "{what} gave errno {errno}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(at.to_str().unwrap()))
        .unwrap();
    for opt in ["ro", "nosuid", "nodev"] {
        assert!(
            line.split(' ').nth(5).unwrap().split(',').any(|o| o == opt),
            "{line}"
        );
    }
    assert!(
        line.contains("default_permissions") && !line.contains("allow_other"),
        "{line}"
    );
}

#[test]
fn a_directory_too_large_for_one_reply_lists_every_entry_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("entry-with-a-longish-name-{i:05}")), "").unwrap();
    }
    env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let seen = under(&at, &src);
    assert_eq!(ls(&seen), ls(&src));
    let find = output(
        Command::new("find")
            .arg(&seen)
            .args(["-mindepth", "1", "-printf", "%i\n"]),
    );
    let inodes: BTreeSet<&str> = find.lines().collect();
    assert_eq!(inodes.len(), 3000, "every entry has its own inode number");
    // The kernel drops what it cached and forgets the inodes; they come
    // back under the same numbers.
    sh("sync; echo 2 > /proc/sys/vm/drop_caches");
    assert_eq!(ls(&seen), ls(&src));
    let again = output(
        Command::new("find")
            .arg(&seen)
            .args(["-mindepth", "1", "-printf", "%i\n"]),
    );
    assert_eq!(again.lines().collect::<BTreeSet<_>>(), inodes);
    assert_eq!(
        std::fs::read(seen.join("entry-with-a-longish-name-01234")).unwrap(),
        b""
    );
}

fn xattr_errno(path: &Path, name: &str, size: usize) -> (isize, i32) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: NUL-terminated strings and a buffer of `size` bytes, alive
    // for the call.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    (r, errno_of(r.min(0) as libc::c_int))
}

#[test]
fn xattrs_answer_size_queries_short_buffers_and_missing_names_as_the_kernel_does() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    sh(&format!(
        "setfattr -n user.comment -v hello {}",
        src.join("f").display()
    ));
    env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let f = under(&at, &src).join("f");
    assert_eq!(xattr_errno(&f, "user.comment", 0), (5, 0), "size query");
    assert_eq!(xattr_errno(&f, "user.comment", 2).1, libc::ERANGE);
    assert_eq!(xattr_errno(&f, "user.comment", 64), (5, 0));
    assert_eq!(xattr_errno(&f, "user.missing", 64).1, libc::ENODATA);
}

#[test]
fn other_users_get_in_only_with_allow_other_and_stored_modes_hold() {
    let env = Env::reachable();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("open"), "for all\n").unwrap();
    std::fs::write(src.join("closed"), "root only\n").unwrap();
    sh(&format!("chmod 600 {}", src.join("closed").display()));
    env.backup(&[&src]);
    let as_nobody = |p: &Path| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "cat"])
            .arg(p)
            .output()
            .unwrap()
    };
    let at = env.path("mnt");
    let m = mount(&env, &at, &["--snapshot", "latest"]);
    let seen = under(&at, &src);
    assert!(
        !as_nobody(&seen.join("open")).status.success(),
        "no allow_other: no way in"
    );
    drop(m);
    let _m = mount(&env, &at, &["--snapshot", "latest", "--allow-other"]);
    let o = as_nobody(&seen.join("open"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"for all\n");
    let o = as_nobody(&seen.join("closed"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
}
