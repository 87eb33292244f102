//! Mounting and unmounting: a dead mount left by a killed daemon is
//! detached first, a mount point inside the repository or the cache is
//! refused, SIGINT and SIGTERM unmount cleanly (the process then exits 0);
//! with `-v`, what was read from the packs is told at the end.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fuser::{Config, MountOption, Session, SessionACL};

use super::{MountFs, Options};
use crate::error::Exit;

fn detach(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Detaches a FUSE mount whose daemon is gone ("Transport endpoint is not
/// connected"), saying so, so the mount point can be used again. Asked
/// with statfs, which the kernel never answers from its caches (a stat of
/// a dead mount's root may well succeed).
pub fn clean_dead_mount(mountpoint: &Path) -> Result<()> {
    match rustix::fs::statfs(mountpoint) {
        Err(e) if e == rustix::io::Errno::NOTCONN => {
            detach(mountpoint).with_context(|| {
                format!(
                    "{} is a dead mount (its daemon was killed) and unmounting it failed",
                    mountpoint.display()
                )
            })?;
            eprintln!(
                "strongroom: {} was a dead mount (its daemon was killed): unmounted it",
                mountpoint.display()
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The mount point, resolved; an existing directory, not inside `avoid`
/// (the repository's and the cache's directories).
pub fn check_mountpoint(mountpoint: &Path, avoid: &[(PathBuf, &str)]) -> Result<PathBuf> {
    let mp = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("the mount point {} cannot be used", mountpoint.display()))?;
    if !mp.is_dir() {
        return Err(Exit::usage(format!(
            "the mount point {} is not a directory",
            mountpoint.display()
        )));
    }
    for (dir, what) in avoid {
        if let Ok(d) = std::fs::canonicalize(dir)
            && mp.starts_with(&d)
        {
            return Err(Exit::usage(format!(
                "the mount point {} lies inside the {what} {}: choose a directory outside it",
                mountpoint.display(),
                d.display()
            )));
        }
    }
    Ok(mp)
}

/// How the mount is mounted, `name` its source in the mount table: read
/// only, `nosuid,nodev,default_permissions`, the owner alone unless
/// `allow_other`, a thread per core (2 to 16) each with its own
/// descriptor. Also used by `examples/nulltree.rs`.
pub fn fuse_config(allow_other: bool, name: &str) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
        MountOption::FSName(name.into()),
        MountOption::Subtype(name.into()),
    ];
    config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 16),
    );
    config.clone_fd = true;
    config
}

/// Mounts `fs` at `mountpoint` and serves it until it is unmounted (by
/// `umount`, or by SIGINT or SIGTERM).
pub fn serve(fs: MountFs, mountpoint: &Path, options: &Options, what: &str) -> Result<()> {
    let config = fuse_config(options.allow_other, "strongroom");
    let reader = fs.reader.clone();
    let mut session = Session::new(fs, mountpoint, &config).map_err(|e| {
        // Only root mounts through /dev/fuse directly; anyone else needs the
        // setuid helper.
        if matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        ) && !rustix::process::geteuid().is_root()
        {
            anyhow::anyhow!(
                "mounting at {} failed ({e}): without root, strongroom mounts through fusermount3 or fusermount (package fuse3), which must be installed, with /dev/fuse usable",
                mountpoint.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("mounting at {} failed", mountpoint.display()))
        }
    })?;
    let mut unmounter = session.unmount_callable();
    let at = mountpoint.to_path_buf();
    crate::interrupt::on_signal(Box::new(move || {
        if unmounter.unmount().is_err() {
            // Busy (a file is open): detached now, gone when released.
            let _ = detach(&at);
        }
    }));
    if crate::verbosity() >= 0 {
        let m = crate::escape::text(&mountpoint.display().to_string());
        eprintln!("mounted {what} at {m}; Ctrl-C or `umount {m}` to unmount");
    }
    let served = session
        .run()
        .with_context(|| format!("serving the mount at {} failed", mountpoint.display()));
    reader.flush_disk_cache();
    if crate::verbosity() >= 1 {
        let c = &reader.counters;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{}", c.opened());
        eprintln!(
            "read ahead {} blobs in {} groups",
            load(&c.ahead_blobs),
            load(&c.ahead_groups)
        );
        if let Some((entries, bytes)) = reader.disk_usage() {
            eprintln!("the disk cache holds {entries} blobs, {bytes} bytes");
        }
    }
    served
}
