//! `strongroom init`: a new repository for the full key.

use anyhow::Result;

use crate::repository::Repository;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let key = ctx.load_key()?.into_full("create a repository")?;
    let backend = ctx.backend(&key.shared)?;
    let repo = Repository::init(backend.clone(), &key)?;
    if ctx.global.json {
        super::print_json(
            &serde_json::json!({ "repository": backend.location(), "id": repo.id().to_hex() }),
        )?;
    } else if !ctx.global.quiet {
        println!(
            "created repository {} at {}",
            repo.id().short(),
            backend.location()
        );
        if backend.append_only() {
            eprintln!("note: this credential can add backups but can neither delete nor overwrite history");
        } else {
            let what = if backend.is_local() {
                "a host that can write to this local path"
            } else {
                "these storage credentials"
            };
            eprintln!(
                "note: {what} can also delete the repository's history; give hosts writer keys \
                 and a strongroom server's writer role for append-only storage"
            );
        }
    }
    Ok(())
}
