//! `strongroom snapshots`: the verified snapshots, oldest first; refused
//! manifests are named in a warning on stderr (one damaged manifest must
//! not hide the others; `check` fails on it).

use std::os::unix::ffi::OsStrExt;

use anyhow::Result;

use crate::cli::SnapshotsArgs;
use crate::escape;
use crate::repository::snapshots::Snapshot;
use crate::repository::trust::SignedBy;

use super::{Ctx, format_time};

pub fn paths_lossy(s: &Snapshot) -> Vec<String> {
    s.catalog
        .paths
        .iter()
        .map(|p| std::ffi::OsStr::from_bytes(p).to_string_lossy().into_owned())
        .collect()
}

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<()> {
    let key = ctx.load_key()?;
    let repo = ctx.open(&key)?;
    let listing = ctx.list_snapshots(&repo, key.shared(), &ctx.cache())?;
    let shown: Vec<&Snapshot> = listing
        .snapshots
        .iter()
        .filter(|s| a.host.as_ref().is_none_or(|h| s.catalog.host == *h))
        .collect();
    for s in &shown {
        if s.future {
            crate::warn(&format!(
                "snapshot {} is dated more than a day in the future ({})",
                s.id.short(),
                format_time(&s.catalog.time, false)
            ));
        }
    }
    if ctx.global.json {
        let v: Vec<_> = shown
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.to_hex(),
                    "short_id": s.id.short(),
                    "time": format_time(&s.catalog.time, true),
                    "host": s.catalog.host,
                    "paths": paths_lossy(s),
                    "tags": s.catalog.tags,
                    "parent": s.catalog.parent.map(|p| p.to_hex()),
                    "tree": s.catalog.tree.to_hex(),
                    "signed_by": match &s.signed_by { SignedBy::Root => "root".to_string(), SignedBy::Writer { host, .. } => format!("writer:{host}") },
                    "future": s.future,
                    "summary": s.catalog.summary,
                })
            })
            .collect();
        super::print_json(&v)?;
    } else {
        println!(
            "{:<10} {:<20} {:<16} {:<16} paths",
            "id", "time (UTC)", "host", "tags"
        );
        for s in &shown {
            println!(
                "{:<10} {:<20} {:<16} {:<16} {}",
                s.id.short(),
                format_time(&s.catalog.time, false)
                    .trim_end_matches('Z')
                    .replace('T', " "),
                escape::text(&s.catalog.host),
                escape::text(&s.catalog.tags.join(",")),
                s.catalog
                    .paths
                    .iter()
                    .map(|p| escape::bytes(p))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if !ctx.global.quiet {
            println!("{} snapshot(s)", shown.len());
        }
    }
    for (name, err) in &listing.refused {
        crate::warn(&format!("snapshot {name} is refused and not listed: {err:#}"));
    }
    Ok(())
}
