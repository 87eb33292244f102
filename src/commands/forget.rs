//! `strongroom forget`: removes the snapshots a retention policy does not
//! keep, group by group (by default each host and set of paths on its own,
//! so one host's policy never removes another's). Only snapshot manifests
//! are removed; the data they alone referenced stays until a prune.
//!
//! A snapshot dated more than a day in the future (which a writer key can
//! make) is always kept and never anchors a span: otherwise one planted
//! snapshot dated 2100 would put every real one outside `--keep-within`.

use std::collections::BTreeMap;

use anyhow::Result;
use rayon::prelude::*;

use crate::backend::Kind;
use crate::cli::ForgetArgs;
use crate::error::Exit;
use crate::escape;
use crate::repository::policy::{self, Candidate, Policy, Within};
use crate::repository::snapshots::Snapshot;

use super::{Ctx, format_time, snapshots::paths_lossy};

fn span(flag: &str, v: &Option<String>) -> Result<Option<Within>> {
    v.as_deref()
        .map(|s| {
            Within::parse(s).ok_or_else(|| {
                Exit::usage(format!(
                    "--{flag} {s:?}: expected a span such as 90d, 6y, 1y6m or 36h (y, m, d, h)"
                ))
            })
        })
        .transpose()
}

fn policy_of(a: &ForgetArgs) -> Result<Policy> {
    Ok(Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: span("keep-within", &a.keep_within)?,
        within_hourly: span("keep-within-hourly", &a.keep_within_hourly)?,
        within_daily: span("keep-within-daily", &a.keep_within_daily)?,
        within_weekly: span("keep-within-weekly", &a.keep_within_weekly)?,
        within_monthly: span("keep-within-monthly", &a.keep_within_monthly)?,
        within_yearly: span("keep-within-yearly", &a.keep_within_yearly)?,
        tags: a.keep_tags.clone(),
    })
}

#[derive(Default)]
struct GroupBy {
    host: bool,
    paths: bool,
    tags: bool,
}

fn group_by(s: &str) -> Result<GroupBy> {
    let mut g = GroupBy::default();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part {
            "host" => g.host = true,
            "paths" => g.paths = true,
            "tags" => g.tags = true,
            _ => {
                return Err(Exit::usage(format!(
                    "--group-by {s:?}: expected host, paths and tags, comma-separated"
                )));
            }
        }
    }
    Ok(g)
}

/// A group's key: (host, paths, tags), each empty when not grouped by.
type GroupKey = (String, Vec<Vec<u8>>, Vec<String>);

fn key_of(g: &GroupBy, s: &Snapshot) -> GroupKey {
    let mut tags = if g.tags {
        s.catalog.tags.clone()
    } else {
        Vec::new()
    };
    tags.sort();
    let mut paths = if g.paths {
        s.catalog.paths.clone()
    } else {
        Vec::new()
    };
    paths.sort();
    (
        if g.host {
            s.catalog.host.clone()
        } else {
            String::new()
        },
        paths,
        tags,
    )
}

/// The snapshots named on the command line (an id or prefix, `latest`, or
/// the full name of a refused one: a revoked writer's, a damaged one).
fn by_name(
    ctx: &Ctx,
    a: &ForgetArgs,
    listing: &crate::repository::snapshots::Listing,
) -> Result<(Vec<crate::format::Id>, Option<serde_json::Value>)> {
    let mut removed: Vec<crate::format::Id> = Vec::new();
    for spec in &a.snapshots {
        let id = match listing.refused.iter().find(|(n, _)| n == spec) {
            Some((n, _)) => crate::format::Id::from_hex(n)
                .ok_or_else(|| Exit::usage(format!("{spec:?} is not a snapshot name")))?,
            None => listing.find(spec, a.host.as_deref())?.id,
        };
        if !removed.contains(&id) {
            removed.push(id);
        }
    }
    if ctx.global.json {
        let ids: Vec<String> = removed.iter().map(|i| i.to_hex()).collect();
        return Ok((
            removed,
            Some(serde_json::json!({ "dry_run": a.dry_run, "remove": ids })),
        ));
    }
    if !ctx.global.quiet {
        for id in &removed {
            match listing.snapshots.iter().find(|s| s.id == *id) {
                Some(s) => println!(
                    "  remove  {}  {}",
                    id.short(),
                    format_time(&s.catalog.time, false)
                ),
                None => println!("  remove  {}  (refused)", id.short()),
            }
        }
    }
    Ok((removed, None))
}

pub fn run(ctx: &Ctx, a: ForgetArgs) -> Result<()> {
    let policy = policy_of(&a)?;
    let grouping = group_by(&a.group_by)?;
    let named = !a.snapshots.is_empty();
    if named && !policy.is_empty() {
        return Err(Exit::usage(
            "give either snapshots to remove or a policy (--keep-*), not both",
        ));
    }
    if !named && policy.is_empty() {
        return Err(Exit::usage(
            "no policy given: it would keep nothing; give at least one --keep-* option, or the snapshots to remove",
        ));
    }
    let prune = if a.prune {
        Some(super::prune::max_unused(&a.max_unused)?)
    } else {
        None
    };
    let key = ctx.load_key()?;
    let full = super::prune::full_key(&key, "forget snapshots")?;
    let shared = key.shared();
    let repo = ctx.open(&key)?;
    if !a.dry_run {
        super::prune::may_delete(&repo, "forget snapshots")?;
    }
    let cache = ctx.cache();
    let _lock = crate::repository::lock::acquire(&repo, &shared.subkeys, &cache, true, "forget")?;
    let listing = ctx.list_snapshots(&repo, shared, &cache)?;
    for (name, err) in listing.refused.iter().filter(|(n, _)| !a.snapshots.contains(n)) {
        crate::warn(&format!("snapshot {name} is refused and left alone: {err:#}"));
    }
    let (removed, json) = if named {
        by_name(ctx, &a, &listing)?
    } else {
        let mut groups: BTreeMap<GroupKey, Vec<&Snapshot>> = BTreeMap::new();
        for s in &listing.snapshots {
            if a.host.as_ref().is_none_or(|h| s.catalog.host == *h) {
                groups.entry(key_of(&grouping, s)).or_default().push(s);
            }
        }
        let mut report = Vec::new();
        let mut removed = Vec::new();
        for (gk, members) in &groups {
            let (future, now): (Vec<&Snapshot>, Vec<&Snapshot>) = members.iter().partition(|s| s.future);
            let candidates: Vec<Candidate> = now
                .iter()
                .map(|s| Candidate {
                    time: s.catalog.time.sec,
                    nsec: s.catalog.time.nsec,
                    tags: s.catalog.tags.clone(),
                })
                .collect();
            let reasons = policy::apply(&policy, &candidates);
            let mut keep: Vec<(&Snapshot, Vec<String>)> = now
                .iter()
                .zip(reasons)
                .filter(|(_, r)| !r.is_empty())
                .map(|(s, r)| (*s, r))
                .collect();
            for s in &future {
                crate::warn(&format!(
                    "snapshot {} is dated in the future ({}): kept, and not counted by the policy",
                    s.id.short(),
                    format_time(&s.catalog.time, false)
                ));
                keep.push((s, vec!["dated in the future".to_string()]));
            }
            keep.sort_by_key(|k| std::cmp::Reverse(k.0.catalog.time));
            let mut gone: Vec<&Snapshot> = now
                .iter()
                .filter(|s| !keep.iter().any(|(k, _)| k.id == s.id))
                .copied()
                .collect();
            gone.sort_by_key(|s| std::cmp::Reverse(s.catalog.time));
            removed.extend(gone.iter().map(|s| s.id));
            report.push((gk.clone(), keep, gone));
        }
        let mut json = None;
        if ctx.global.json {
            let v: Vec<_> = report
                .iter()
                .map(|((host, _, tags), keep, gone)| {
                    let paths = keep
                        .first()
                        .map(|(s, _)| *s)
                        .or(gone.first().copied())
                        .map(paths_lossy)
                        .unwrap_or_default();
                    serde_json::json!({
                        "host": host,
                        "paths": if grouping.paths { serde_json::json!(paths) } else { serde_json::Value::Null },
                        "tags": tags,
                        "keep": keep.iter().map(|(s, r)| serde_json::json!({
                            "id": s.id.to_hex(),
                            "short_id": s.id.short(),
                            "time": format_time(&s.catalog.time, true),
                            "host": s.catalog.host,
                            "reasons": r,
                        })).collect::<Vec<_>>(),
                        "remove": gone.iter().map(|s| serde_json::json!({
                            "id": s.id.to_hex(),
                            "short_id": s.id.short(),
                            "time": format_time(&s.catalog.time, true),
                            "host": s.catalog.host,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json = Some(serde_json::json!({ "dry_run": a.dry_run, "groups": v }));
        } else if !ctx.global.quiet {
            for ((host, paths, tags), keep, gone) in &report {
                let mut title = Vec::new();
                if grouping.host {
                    title.push(format!("host {}", escape::text(host)));
                }
                if grouping.paths {
                    let p: Vec<String> = paths.iter().map(|p| escape::bytes(p)).collect();
                    title.push(format!("paths {}", p.join(" ")));
                }
                if grouping.tags {
                    title.push(format!("tags [{}]", escape::text(&tags.join(","))));
                }
                println!(
                    "snapshots of {}:",
                    if title.is_empty() {
                        "the repository".into()
                    } else {
                        title.join(", ")
                    }
                );
                for (s, r) in keep {
                    println!(
                        "  keep    {}  {}  {}",
                        s.id.short(),
                        format_time(&s.catalog.time, false),
                        r.join(", ")
                    );
                }
                for s in gone {
                    println!(
                        "  remove  {}  {}",
                        s.id.short(),
                        format_time(&s.catalog.time, false)
                    );
                }
                println!("  {} kept, {} to remove", keep.len(), gone.len());
            }
        }
        (removed, json)
    };
    if a.dry_run {
        if !ctx.global.quiet && !ctx.global.json {
            println!(
                "dry run: {} snapshot(s) would be removed, nothing was{}",
                removed.len(),
                if prune.is_some() {
                    " (and nothing pruned)"
                } else {
                    ""
                }
            );
        }
        return json.map_or(Ok(()), |j| super::print_json(&j));
    }
    let failures: Vec<String> = removed
        .par_iter()
        .filter_map(|id| {
            repo.backend
                .delete(Kind::Snapshots, &id.to_hex())
                .err()
                .map(|e| format!("snapshot {}: {e:#}", id.short()))
        })
        .collect();
    crate::repository::rollback::record_removed(&cache, &shared.subkeys.cache, &repo, &removed);
    if let Some(first) = failures.first() {
        anyhow::bail!(
            "{} of {} snapshot(s) could not be removed; the first: {first}",
            failures.len(),
            removed.len()
        );
    }
    let Some(max_unused) = prune else {
        if !ctx.global.quiet && !ctx.global.json {
            println!(
                "removed {} snapshot(s); the data only they used stays until a prune",
                removed.len()
            );
        }
        return json.map_or(Ok(()), |j| super::print_json(&j));
    };
    if !ctx.global.quiet && !ctx.global.json {
        println!("removed {} snapshot(s); pruning", removed.len());
    }
    let opts = crate::repository::prune::Options {
        max_unused,
        dry_run: false,
    };
    let summary = super::prune::run_locked(ctx, full, &repo, &cache, &opts)?;
    match json {
        Some(mut j) => {
            j["prune"] = serde_json::to_value(&summary)?;
            super::print_json(&j)
        }
        None => Ok(()),
    }
}
