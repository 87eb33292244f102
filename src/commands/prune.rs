//! `strongroom prune`: removes the data no snapshot references and repacks
//! packs partly used (see [`crate::repository::prune`]). Full key only: a
//! prune reads every snapshot's trees to know what they reference.

use anyhow::Result;

use crate::cache::Cache;
use crate::cli::PruneArgs;
use crate::error::Exit;
use crate::keys::{FullKey, Key};
use crate::progress::bytes;
use crate::repository::Repository;
use crate::repository::prune::plan::MaxUnused;
use crate::repository::prune::{self, Options, Summary};
use crate::repository::reader::Reader;

use super::Ctx;

pub fn max_unused(s: &str) -> Result<MaxUnused> {
    MaxUnused::parse(s).ok_or_else(|| {
        Exit::usage(format!(
            "--max-unused {s:?}: expected a percentage from 0 to 100 (such as 5%) or `unlimited`"
        ))
    })
}

/// The full key, or one sentence saying why a writer key will not do.
pub fn full_key<'a>(key: &'a Key, what: &str) -> Result<&'a FullKey> {
    match key {
        Key::Full(k) => Ok(k),
        Key::Writer(w) => Err(Exit::usage(format!(
            "this is a writer key (host {}): it can add backups but cannot {what}; use the full key",
            w.host
        ))),
    }
}

/// Refuses, in one sentence, storage this credential may not delete from
/// (a strongroom server's writer or reader role).
pub fn may_delete(repo: &Repository, what: &str) -> Result<()> {
    if repo.backend.append_only() {
        return Err(Exit::usage(format!(
            "this account's role on {} is append-only or read-only: it cannot {what}; use an admin account",
            repo.backend.location()
        )));
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<()> {
    let opts = Options {
        max_unused: max_unused(&a.max_unused)?,
        dry_run: a.dry_run,
    };
    let key = ctx.load_key()?;
    let full = full_key(&key, "prune")?;
    let repo = ctx.open(&key)?;
    if !opts.dry_run {
        may_delete(&repo, "prune")?;
    }
    let cache = ctx.cache();
    // A dry run changes nothing: a shared lock keeps a prune away.
    let _lock = crate::repository::lock::acquire(
        &repo,
        &full.shared.subkeys,
        &cache,
        !opts.dry_run,
        if opts.dry_run { "prune --dry-run" } else { "prune" },
    )?;
    let summary = run_locked(ctx, full, &repo, &cache, &opts)?;
    if ctx.global.json {
        super::print_json(&summary)?;
    }
    Ok(())
}

/// Prunes under a lock the caller holds (exclusive unless dry); prints
/// the outcome for people (the caller prints JSON).
pub fn run_locked(
    ctx: &Ctx,
    key: &FullKey,
    repo: &Repository,
    cache: &Cache,
    opts: &Options,
) -> Result<Summary> {
    let listing = ctx.list_snapshots(repo, &key.shared, cache)?;
    let reader = Reader::open(repo, key, cache)?;
    let show = crate::progress::wanted(ctx.global.json, ctx.global.quiet);
    let say = |m: &str| {
        if show {
            eprintln!("{m}");
        }
    };
    let summary = prune::prune(&reader, &listing, opts, &say)?;
    if !ctx.global.quiet && !ctx.global.json {
        print(&summary, opts);
    }
    Ok(summary)
}

fn print(s: &Summary, opts: &Options) {
    let would = if s.dry_run { "would be " } else { "" };
    println!(
        "{} snapshot(s) reference {} blob(s); {} pack(s), {} before",
        s.snapshots,
        s.referenced_blobs,
        s.packs_before,
        bytes(s.pack_bytes_before)
    );
    println!(
        "{} pack(s) {would}deleted: {} unused, {} repacked ({} of them not indexed); {} blob(s), {} {would}moved \
         into {} new pack(s)",
        s.packs_deleted + s.packs_repacked,
        s.packs_deleted,
        s.packs_repacked,
        s.unindexed_packs_deleted,
        s.blobs_moved,
        bytes(s.bytes_moved),
        s.packs_written
    );
    if s.missing_packs_dropped > 0 {
        println!(
            "{} pack(s) missing from storage {would}dropped from the index (no snapshot needs their blobs)",
            s.missing_packs_dropped
        );
    }
    if !s.dry_run {
        println!(
            "{} index file(s) written, {} deleted; {} key envelope(s) of runs no longer used deleted",
            s.index_files_written, s.index_files_deleted, s.envelopes_deleted
        );
    }
    let limit = match opts.max_unused {
        MaxUnused::Unlimited => "unlimited".to_string(),
        MaxUnused::Percent(p) => format!("{p}%"),
    };
    println!(
        "{} {would}freed; packs {} {}, of which {} unused (--max-unused {limit})",
        bytes(s.bytes_freed),
        if s.dry_run { "would then hold" } else { "now hold" },
        bytes(s.pack_bytes_after),
        bytes(s.unused_bytes_after)
    );
    if s.dry_run {
        println!("dry run: nothing was changed");
    }
}
