//! `strongroom key …`: writer keys, public keys, passphrases, recipients.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::KeyCommand;
use crate::error::Exit;
use crate::format::keyfile::KeyKind;
use crate::keys::{self, Key, PassphraseSource};

use super::Ctx;

pub const PUBLIC_MAGIC: &str = "strongroom public encryption key v1";

pub fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::ExportWriter {
            out,
            host,
            no_passphrase,
            new_passphrase_file,
            bits,
        } => {
            refuse_existing(&out)?;
            let key = ctx.load_key()?.into_full("export a writer key")?;
            let host = host.unwrap_or_else(crate::hostname);
            let pass = new_passphrase(no_passphrase, new_passphrase_file)?;
            let ca_pem = ctx
                .global
                .ca
                .as_deref()
                .map(super::ca::certificate_to_carry)
                .transpose()?;
            let mut writer = key.export_writer(&host, bits)?;
            if ca_pem.is_some() {
                writer.shared.ca_pem = ca_pem;
            }
            keys::save(&Key::Writer(writer), &out, pass.as_deref().map(|p| &p[..]))?;
            if ctx.global.json {
                super::print_json(&serde_json::json!({
                    "message_type": "key",
                    "kind": "writer",
                    "host": host,
                    "path": out.to_string_lossy(),
                    "passphrase": pass.is_some(),
                }))?;
            } else if !ctx.global.quiet {
                eprintln!("wrote writer key for host {host} to {}", out.display());
            }
        }
        KeyCommand::ExportPublic { out } => {
            refuse_existing(&out)?;
            let key = ctx.load_key()?.into_full("export the public encryption key")?;
            let text = format!(
                "{PUBLIC_MAGIC}\n{}\nroot {}\n",
                hex::encode(key.encryption.public().der()),
                hex::encode(key.shared.root_public.der())
            );
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.write_all(text.as_bytes())?;
            if ctx.global.json {
                super::print_json(&serde_json::json!({
                    "message_type": "public_key",
                    "path": out.to_string_lossy(),
                    "fingerprint": hex::encode(key.encryption.public().fingerprint()),
                }))?;
            }
        }
        KeyCommand::Passwd {
            new_passphrase_file,
            no_passphrase,
        } => {
            let path = ctx.key_path()?;
            let key = ctx.load_key()?;
            let pass = new_passphrase(no_passphrase, new_passphrase_file)?;
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::Builder::new().prefix(".key-").tempdir_in(dir)?;
            let tmp_path = tmp.path().join("key");
            keys::save(&key, &tmp_path, pass.as_deref().map(|p| &p[..]))?;
            std::fs::rename(&tmp_path, &path).with_context(|| format!("replacing {}", path.display()))?;
            if ctx.global.json {
                super::print_json(&serde_json::json!({
                    "message_type": "key",
                    "path": path.to_string_lossy(),
                    "passphrase": pass.is_some(),
                }))?;
            } else if !ctx.global.quiet {
                eprintln!("changed the passphrase of {}", path.display());
            }
        }
        KeyCommand::AddRecipient { public_key_file } => {
            super::recovery::add_recipient(ctx, &public_key_file)?
        }
        KeyCommand::Recover {
            public,
            out,
            no_passphrase,
            new_passphrase_file,
        } => {
            refuse_existing(&out)?;
            let pass = new_passphrase(no_passphrase, new_passphrase_file)?;
            super::recovery::recover(ctx, &public, &out, pass.as_deref().map(|p| &p[..]))?
        }
        KeyCommand::RevokeWriter { writer } => super::recovery::revoke_writer(ctx, &writer)?,
        KeyCommand::List => super::recovery::list(ctx)?,
        KeyCommand::Show => show(ctx)?,
    }
    Ok(())
}

pub fn refuse_existing(p: &Path) -> Result<()> {
    if p.exists() {
        return Err(Exit::usage(format!(
            "{} already exists; not overwriting it",
            p.display()
        )));
    }
    Ok(())
}

fn new_passphrase(
    none: bool,
    file: Option<std::path::PathBuf>,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
    if none {
        return Ok(None);
    }
    match file {
        Some(f) => Ok(Some(PassphraseSource { file: Some(f) }.get("")?)),
        None => Ok(Some(PassphraseSource::default().get_new()?)),
    }
}

/// `key show`: the key file's outer layer, which needs no passphrase.
fn show(ctx: &Ctx) -> Result<()> {
    let path = ctx.key_path()?;
    let file = keys::read_on_disk(&path)?;
    let kind = match file.kind {
        KeyKind::Full => "full",
        KeyKind::Writer => "writer",
    };
    if ctx.global.json {
        super::print_json(&serde_json::json!({
            "message_type": "key",
            "path": path.to_string_lossy(),
            "kind": kind,
            "host": file.host,
            "passphrase": file.kdf.is_some(),
            "ca": file.ca_pem.is_some(),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "kind: {kind}")?;
        if let Some(host) = &file.host {
            writeln!(out, "host: {host}")?;
        }
        writeln!(
            out,
            "passphrase: {}",
            if file.kdf.is_some() { "yes" } else { "no" }
        )?;
        writeln!(
            out,
            "ca: {}",
            if file.ca_pem.is_some() { "carried" } else { "none" }
        )?;
    }
    Ok(())
}
