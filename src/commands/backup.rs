//! `strongroom backup`: a new snapshot of paths or of standard input.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::chunker::Chunker;
use crate::cli::BackupArgs;
use crate::error::Exit;
use crate::format::Timestamp;
use crate::format::manifest::Catalog;
use crate::fs::backup::{Archiver, ParentSnapshot};
use crate::fs::exclude::Excludes;
use crate::fs::filescache::FilesCache;
use crate::keys::Key;
use crate::repository::reader::Reader;
use crate::repository::writer::Writer;

use super::Ctx;

pub fn run(ctx: &Ctx, a: BackupArgs) -> Result<()> {
    let key = ctx.load_key()?;
    let host = match (&key, &a.host) {
        (Key::Writer(w), Some(h)) if *h != w.host => {
            return Err(Exit::usage(format!(
                "this writer key signs only for host {}, not {h}",
                w.host
            )));
        }
        (Key::Writer(w), _) => w.host.clone(),
        (Key::Full(_), Some(h)) => h.clone(),
        (Key::Full(_), None) => crate::hostname(),
    };
    let time = match &a.time {
        Some(t) => super::parse_time(t)?,
        None => Timestamp::now(),
    };
    let mut patterns = a.excludes.clone();
    for f in &a.exclude_files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading exclude file {}", f.display()))?;
        patterns.extend(text.lines().map(str::to_string));
    }
    let excludes = Excludes::new(&patterns)?;
    if let Some(name) = a.stdin_filename.as_deref().filter(|_| a.stdin)
        && (name.is_empty() || name.contains('/') || name == "." || name == "..")
    {
        return Err(Exit::usage("--stdin-filename must be a plain file name"));
    }
    // Like restic: a path that is not there is named and skipped, and the
    // snapshot of the others ends with exit 3; if none is there, one
    // sentence names them all.
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    if !a.stdin {
        for p in &a.paths {
            match std::fs::symlink_metadata(p) {
                Ok(_) => paths.push(resolve(p)?),
                Err(e) => missing.push(format!("{}: {e}", p.display())),
            }
        }
        if paths.is_empty() {
            bail!("nothing to back up: {}", missing.join("; "));
        }
        for m in &missing {
            crate::warn(&format!("skipping {m}"));
        }
    }
    let skipped = missing.len();
    let path_bytes: Vec<Vec<u8>> = if a.stdin {
        vec![format!("/{}", a.stdin_filename.as_deref().unwrap_or("stdin")).into_bytes()]
    } else {
        use std::os::unix::ffi::OsStrExt;
        paths.iter().map(|p| p.as_os_str().as_bytes().to_vec()).collect()
    };

    let repo = ctx.open(&key)?;
    let cache = ctx.cache();
    let shared = key.shared();
    let listing = ctx.list_snapshots(&repo, shared, &cache)?;
    let parent = listing
        .snapshots
        .iter()
        .rev()
        .find(|s| s.catalog.host == host && s.catalog.paths == path_bytes)
        .map(|s| (s.id, s.catalog.tree, s.catalog.started));
    let old_cache = FilesCache::load(
        &cache,
        &repo.id(),
        &shared.subkeys.files_cache,
        &host,
        &path_bytes,
    );
    let _lock = crate::repository::lock::acquire(&repo, &shared.subkeys, &cache, false, "backup")?;
    let writer = Writer::begin(&repo, &key, &cache)?;
    let chunker = Chunker::new(&repo.config.chunker, shared.chunker_seed);
    // Without a files cache, a full key can still tell unchanged files by
    // the parent snapshot's trees (a writer key cannot read them).
    let reader = match (&key, parent) {
        (Key::Full(k), Some(_)) if old_cache.is_empty() => Some(Reader::open(&repo, k, &cache)?),
        _ => None,
    };
    let parent_trees = reader
        .as_ref()
        .zip(parent)
        .map(|(reader, (_, tree, started))| ParentSnapshot {
            reader,
            tree,
            started,
        });
    let archiver = Archiver::new(
        &writer,
        chunker,
        excludes,
        a.one_file_system,
        old_cache,
        parent_trees,
    )
    .list_files(if ctx.global.json || ctx.global.quiet {
        0
    } else {
        ctx.global.verbose
    });
    let show = crate::progress::wanted(ctx.global.json, ctx.global.quiet);
    let pool = crate::fs::io_pool(4)?;
    let tree = crate::progress::run(
        show,
        || archiver.progress_line(),
        || {
            pool.install(|| {
                if a.stdin {
                    archiver.archive_stdin(a.stdin_filename.as_deref().unwrap_or("stdin"))
                } else {
                    archiver.archive_paths(&paths)
                }
            })
        },
    )?;
    let started = archiver.started();
    let (summary, errors, new_cache) = archiver.into_parts();
    let catalog = Catalog {
        time,
        host: host.clone(),
        paths: path_bytes.clone(),
        tags: a.tags.clone(),
        started,
        parent: parent.map(|(id, _, _)| id),
        tree,
        summary,
    };
    let (id, catalog) = writer.finish(catalog)?;
    crate::repository::rollback::record_own(
        &cache,
        &shared.subkeys.cache,
        &repo,
        &catalog.host,
        catalog.time,
        id,
    );
    new_cache.save(
        &cache,
        &repo.id(),
        &shared.subkeys.files_cache,
        &host,
        &path_bytes,
    );
    let s = &catalog.summary;
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id.to_hex(),
            "short_id": id.short(),
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "dirs": s.dirs,
            "bytes_read": s.bytes_read,
            "bytes_total": s.bytes_total,
            "bytes_added": s.bytes_added,
            "errors": errors.len() + skipped,
        }))?;
    } else if !ctx.global.quiet {
        println!(
            "snapshot {} saved: {} new, {} changed, {} unchanged files; {} read, {} added to the repository",
            id.short(),
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            crate::progress::bytes(s.bytes_read),
            crate::progress::bytes(s.bytes_added),
        );
    }
    if !errors.is_empty() || skipped > 0 {
        return Err(Exit::partial(format!(
            "snapshot {} was saved, but {} path(s) could not be read (named above)",
            id.short(),
            errors.len() + skipped
        )));
    }
    Ok(())
}

/// The absolute form of a path to back up, with `.` and `..` resolved
/// through the real directories, but the last component itself not
/// followed (a symlink is backed up as a symlink).
fn resolve(p: &std::path::Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    let name = match abs.file_name() {
        Some(n)
            if abs
                .components()
                .next_back()
                .is_some_and(|c| matches!(c, std::path::Component::Normal(_))) =>
        {
            n.to_os_string()
        }
        _ => return Ok(std::fs::canonicalize(&abs)?),
    };
    let parent = abs.parent().unwrap_or(std::path::Path::new("/"));
    Ok(std::fs::canonicalize(parent)?.join(name))
}
