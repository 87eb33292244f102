//! `strongroom keygen`: a new full key file.

use anyhow::Result;

use crate::cli::KeygenArgs;
use crate::keys::{self, FullKey, Key};

use super::Ctx;

pub fn run(ctx: &Ctx, a: KeygenArgs) -> Result<()> {
    if a.out.exists() {
        return Err(crate::error::Exit::usage(format!(
            "{} already exists; not overwriting a key file",
            a.out.display()
        )));
    }
    let passphrase = if a.no_passphrase {
        None
    } else {
        Some(ctx.passphrases().get_new()?)
    };
    let ca_pem = ctx
        .global
        .ca
        .as_deref()
        .map(super::ca::certificate_to_carry)
        .transpose()?;
    let mut key = FullKey::generate(a.bits)?;
    key.shared.ca_pem = ca_pem;
    keys::save(&Key::Full(key), &a.out, passphrase.as_deref().map(|p| &p[..]))?;
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "key",
            "kind": "full",
            "path": a.out.to_string_lossy(),
            "passphrase": !a.no_passphrase,
        }))?;
    } else if !ctx.global.quiet {
        eprintln!(
            "wrote full key {} (keep it safe: without it no backup can be read)",
            a.out.display()
        );
    }
    Ok(())
}
