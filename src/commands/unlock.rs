//! `strongroom unlock [--remove-all]`: removes the locks this client judges
//! stale, or (full key only) every lock.

use anyhow::Result;

use crate::cli::UnlockArgs;
use crate::keys::Key;
use crate::repository::lock;

use super::Ctx;

pub fn run(ctx: &Ctx, a: UnlockArgs) -> Result<()> {
    let key = ctx.load_key()?;
    let key = if a.remove_all {
        Key::Full(key.into_full("remove every lock")?)
    } else {
        key
    };
    let repo = ctx.open(&key)?;
    let removed = if a.remove_all {
        lock::remove_all(&repo)?
    } else {
        lock::remove_stale(&repo, &key.shared().subkeys, &ctx.cache())?
    };
    let what = if a.remove_all { "" } else { "stale " };
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "removed": removed,
            "all": a.remove_all,
        }))?;
    } else if !ctx.global.quiet {
        println!("removed {removed} {what}lock(s)");
    }
    Ok(())
}
