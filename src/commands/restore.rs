//! `strongroom restore SNAPSHOT[:PATH] --target DIR`.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::RestoreArgs;
use crate::error::Exit;
use crate::fs::restore::Restorer;
use crate::repository::reader::Reader;

use super::Ctx;
use super::ls::lookup;

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<()> {
    let key = ctx.load_key()?.into_full("restore files")?;
    let (spec, inner) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), PathBuf::from(p)),
        None => (a.snapshot.clone(), PathBuf::from("/")),
    };
    let repo = crate::repository::Repository::open(ctx.backend(&key.shared)?, &key.shared)?;
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &key.shared.subkeys, &cache, false, "restore")?;
    let listing = ctx.list_snapshots(&repo, &key.shared, &cache)?;
    let snap = listing.find(&spec, a.host.as_deref())?;
    let reader = Reader::open(&repo, &key, &cache)?;
    let node = lookup(&reader, snap.catalog.tree, &inner)?;
    let rel: PathBuf = inner
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let target = open_target(&a.target)?;
    let restorer = Restorer::new(&reader, target.as_fd(), &a.target);
    let show = crate::progress::wanted(ctx.global.json, ctx.global.quiet);
    let line = || {
        format!(
            "{} files, {} written",
            restorer.files.load(std::sync::atomic::Ordering::Relaxed),
            crate::progress::bytes(restorer.bytes.load(std::sync::atomic::Ordering::Relaxed))
        )
    };
    let pool = crate::fs::io_pool(4)?;
    crate::progress::run(show, line, || {
        pool.install(|| {
            if rel.as_os_str().is_empty() {
                restorer.restore_into_base(&node)
            } else {
                restorer.restore_at(&node, &rel)
            }
        })
    })?;
    let errors = restorer.errors();
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot": snap.id.to_hex(),
            "short_id": snap.id.short(),
            "target": a.target.to_string_lossy(),
            "files": restorer.files.load(std::sync::atomic::Ordering::Relaxed),
            "bytes": restorer.bytes.load(std::sync::atomic::Ordering::Relaxed),
            "errors": errors.len(),
        }))?;
    } else if !ctx.global.quiet {
        eprintln!(
            "restored snapshot {} into {}: {} files, {}",
            snap.id.short(),
            a.target.display(),
            restorer.files.load(std::sync::atomic::Ordering::Relaxed),
            crate::progress::bytes(restorer.bytes.load(std::sync::atomic::Ordering::Relaxed))
        );
        if crate::verbosity() >= 1 {
            eprintln!("{}", reader.counters.opened());
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} entr{} could not be restored (named above)",
            errors.len(),
            if errors.len() == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

/// Opens the restore target, making it if needed. The target's own path is
/// the user's, followed like any path they type; everything below it is
/// made without following symlinks. A target that is not a directory, or
/// cannot take new entries, is one clear error before anything is written.
fn open_target(target: &Path) -> Result<OwnedFd> {
    if let Ok(m) = std::fs::metadata(target)
        && !m.is_dir()
    {
        return Err(Exit::usage(format!(
            "the restore target {} exists and is not a directory",
            target.display()
        )));
    }
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create the restore target {}", target.display()))?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(target)
        .with_context(|| format!("cannot open the restore target {}", target.display()))?;
    let fd = OwnedFd::from(dir);
    if let Err(e) = crate::fs::beneath::probe_writable(fd.as_fd()) {
        bail!("cannot write into the restore target {}: {e}", target.display());
    }
    Ok(fd)
}
