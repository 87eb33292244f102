//! `strongroom mount`: sparse files keep their holes through the mount
//! (`SEEK_DATA`/`SEEK_HOLE`, `st_blocks`, `cp` out of it), and `statfs`
//! describes a read-only filesystem that `df` and `stat -f` accept.

mod util;

use std::path::Path;
use std::process::Command;

use util::fuse::{mount, output};
use util::{Env, random_file, sh, under};

const MIB: u64 = 1 << 20;

/// 1 MiB of data, a 64 MiB hole, 1 MiB of written zeros (allocated: data,
/// not a hole), 1 MiB of data, then an 8 MiB hole up to the size.
fn sparse_file(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let (a, b, f) = (dir.join("a"), dir.join("b"), dir.join("sparse"));
    random_file(&a, MIB as usize, 1);
    random_file(&b, MIB as usize, 2);
    sh(&format!(
        "cd {d} && truncate -s 75M sparse \
         && dd if=a of=sparse bs=1M conv=notrunc status=none \
         && dd if=/dev/zero of=sparse bs=1M seek=65 count=1 conv=notrunc status=none \
         && dd if=b of=sparse bs=1M seek=66 conv=notrunc status=none \
         && rm a b && sync sparse",
        d = dir.display()
    ));
    f
}

/// Every data region `SEEK_DATA`/`SEEK_HOLE` find walking the file, then
/// both answers (an offset or the errno's name) at and around each
/// boundary, past the end and at a negative offset.
const SEEK_MAP: &str = r#"
import errno, os, sys
def seek(fd, off, whence):
    try:
        return str(os.lseek(fd, off, whence))
    except OSError as e:
        return errno.errorcode[e.errno]
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
bounds, pos = [0, size], 0
while True:
    try:
        start = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as e:
        print("walk ends", errno.errorcode[e.errno])
        break
    end = os.lseek(fd, start, os.SEEK_HOLE)
    print("data", start, end)
    bounds += [start, end]
    pos = end
for b in sorted(set(bounds)):
    for off in (b - 1, b, b + 1):
        if off >= 0:
            print(off, seek(fd, off, os.SEEK_DATA), seek(fd, off, os.SEEK_HOLE))
print("far", seek(fd, 1 << 40, os.SEEK_DATA), seek(fd, 1 << 40, os.SEEK_HOLE))
print("negative", seek(fd, -1, os.SEEK_DATA), seek(fd, -1, os.SEEK_HOLE))
"#;

fn seek_map(p: &Path) -> String {
    output(Command::new("python3").arg("-c").arg(SEEK_MAP).arg(p))
}

fn blocks(p: &Path) -> String {
    output(Command::new("stat").args(["-c", "%b"]).arg(p))
}

#[test]
fn seek_data_and_seek_hole_find_the_same_offsets_through_the_mount_as_on_the_source() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let file = sparse_file(&src);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let seen = under(&at, &file);

    let expected = seek_map(&file);
    // The source really is sparse as built: two data regions (the zeros
    // are written, so data), then a trailing hole.
    assert!(
        expected.starts_with(&format!(
            "data 0 {}\ndata {} {}\nwalk ends ENXIO\n",
            MIB,
            65 * MIB,
            67 * MIB
        )),
        "{expected}"
    );
    assert_eq!(seek_map(&seen), expected);
    assert_eq!(blocks(&seen), blocks(&file));
    sh(&format!("cmp {} {}", file.display(), seen.display()));
}

#[test]
fn cp_out_of_the_mount_reads_only_the_data_regions_and_keeps_the_holes() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let file = sparse_file(&src);
    env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);
    let seen = under(&at, &file);

    // Plain cp copies the data regions SEEK_DATA finds, and --sparse=always
    // every region; both leave holes, and make holes of the written zeros
    // too, as they do from the source.
    for (name, flags) in [("plain", ""), ("always", "--sparse=always")] {
        let from_source = env.path(&format!("{name}-from-source"));
        let from_mount = env.path(&format!("{name}-from-mount"));
        sh(&format!(
            "cp {flags} {} {}",
            file.display(),
            from_source.display()
        ));
        let read = bytes_read_by(&format!("cp {flags} {} {}", seen.display(), from_mount.display()));
        sh(&format!("cmp {} {}", file.display(), from_mount.display()));
        assert_eq!(blocks(&from_mount), blocks(&from_source), "cp {flags}");
        assert_eq!(seek_map(&from_mount), seek_map(&from_source), "cp {flags}");
        // Plain cp reads the 3 MiB of data regions, not the holes.
        if name == "plain" {
            assert!(
                read < 4 * MIB,
                "cp read {read} bytes of a file with 3 MiB of data"
            );
        }
    }
}

/// The bytes `script`'s processes read (`rchar`: what read calls
/// returned), counted by the shell that ran and reaped them.
fn bytes_read_by(script: &str) -> u64 {
    let io = output(
        Command::new("sh")
            .arg("-ec")
            .arg(format!("{script}; cat /proc/$$/io")),
    );
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap_or_else(|| panic!("no rchar in {io}"))
        .parse()
        .unwrap()
}

#[test]
fn statfs_of_the_mount_shows_a_read_only_filesystem_sized_by_the_snapshots_shown() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    sparse_file(&src);
    random_file(&src.join("small"), 10_000, 3);
    let summary = env.backup(&[&src]);
    let at = env.path("mnt");
    let _m = mount(&env, &at, &["--snapshot", "latest"]);

    // Block size, total blocks (the snapshot's 75 MiB + 10,000 bytes of
    // files in 4 KiB blocks), none free or available, the longest name,
    // and the snapshot's files and directories.
    let f = output(
        Command::new("stat")
            .args(["-f", "-c", "%S %b %f %a %l %c"])
            .arg(&at),
    );
    let entries: u64 = ["files_new", "files_changed", "files_unchanged", "dirs"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
    assert!(entries >= 3, "{summary}");
    let total = (75 * MIB + 10_000).div_ceil(4096);
    assert_eq!(f.trim(), format!("4096 {total} 0 0 255 {entries}"));

    let flags = output(
        Command::new("python3")
            .args([
                "-c",
                "import os, sys; print(os.statvfs(sys.argv[1]).f_flag & os.ST_RDONLY != 0)",
            ])
            .arg(&at),
    );
    assert_eq!(flags.trim(), "True");

    let df = output(
        Command::new("df")
            .args(["-B4096", "--output=size,used,avail"])
            .arg(&at),
    );
    let last = df.lines().last().unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        last,
        [total.to_string(), total.to_string(), "0".to_string()],
        "{df}"
    );

    // Every snapshot shown: the same figures for the only one.
    let all = env.path("all");
    let _all = mount(&env, &all, &[]);
    let f = output(
        Command::new("stat")
            .args(["-f", "-c", "%S %b %f %a %l %c"])
            .arg(&all),
    );
    assert_eq!(f.trim(), format!("4096 {total} 0 0 255 {entries}"));
}
