//! `strongroom restore SNAPSHOT[:PATH] --target DIR`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::RestoreArgs;
use crate::error::Exit;
use crate::format::tree::NodeKind;
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
    let repo = crate::repository::Repository::open(ctx.backend()?, &key.shared)?;
    let _lock = crate::repository::lock::acquire(&repo, &key.shared.subkeys.index, false, "restore")?;
    let cache = ctx.cache();
    let listing = ctx.list_snapshots(&repo, &key.shared, &cache)?;
    let snap = listing.find(&spec, a.host.as_deref())?;
    let reader = Reader::open(&repo, &key, &cache)?;
    let node = lookup(&reader, snap.catalog.tree, &inner)?;
    let rel = inner.strip_prefix("/").unwrap_or(&inner);
    let dest = if rel.as_os_str().is_empty() {
        a.target.clone()
    } else {
        a.target.join(rel)
    };
    if let Some(parent) = dest.parent()
        && (node.kind != NodeKind::Dir || dest != a.target)
    {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if node.kind == NodeKind::Dir && dest == a.target {
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    }
    ensure_not_inside(&dest, &a.target)?;
    let restorer = Restorer::new(&reader);
    let show = crate::progress::wanted(ctx.global.json, ctx.global.quiet);
    let line = || {
        format!(
            "{} files, {} written",
            restorer.files.load(std::sync::atomic::Ordering::Relaxed),
            crate::progress::bytes(restorer.bytes.load(std::sync::atomic::Ordering::Relaxed))
        )
    };
    crate::progress::run(show, line, || restorer.restore(&node, &dest))?;
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

fn ensure_not_inside(dest: &Path, target: &Path) -> Result<()> {
    if !dest.starts_with(target) {
        return Err(Exit::usage(format!("{} lies outside the target", dest.display())));
    }
    Ok(())
}
