//! One file of glue per subcommand.

mod backup;
pub mod ca;
mod check;
mod copy;
mod explore;
mod forget;
mod init;
mod key;
mod keygen;
mod ls;
mod mount;
mod prune;
mod recovery;
mod repair_index;
mod repair_snapshots;
mod restore;
mod server;
mod snapshots;
mod unlock;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::backend::{self, Backend};
use crate::cache::Cache;
use crate::cli::{Command, Global};
use crate::error::Exit;
use crate::format::Timestamp;
use crate::keys::{self, Key, PassphraseSource};
use crate::repository::Repository;

pub use ls::root_node;

/// What every command may need: the global options, and ways to open the
/// key, the repository and the cache from them.
pub struct Ctx {
    pub global: Global,
}

impl Ctx {
    pub fn passphrases(&self) -> PassphraseSource {
        PassphraseSource {
            file: self.global.passphrase_file.clone(),
        }
    }

    pub fn key_path(&self) -> Result<PathBuf> {
        self.global
            .key
            .clone()
            .ok_or_else(|| Exit::usage("no key file given: use -k KEYFILE or STRONGROOM_KEY"))
    }

    pub fn load_key(&self) -> Result<Key> {
        keys::load(&self.key_path()?, &self.passphrases())
    }

    /// The repository's storage; an `https://` one trusts the CA of
    /// `--ca`, else the one `key` carries.
    pub fn backend(&self, key: &crate::keys::Shared) -> Result<Arc<dyn Backend>> {
        let url = self
            .global
            .repo
            .as_deref()
            .ok_or_else(|| Exit::usage("no repository given: use -r URL or STRONGROOM_REPO"))?;
        self.backend_at(url, key, self.global.password_file.as_deref())
    }

    /// The storage at `url`, trusting the same CA as [`Ctx::backend`].
    pub fn backend_at(
        &self,
        url: &str,
        key: &crate::keys::Shared,
        password_file: Option<&std::path::Path>,
    ) -> Result<Arc<dyn Backend>> {
        backend::open(
            url,
            &backend::Remote {
                ca: self.global.ca.as_deref(),
                key_ca: key.ca_pem.as_deref(),
                password_file,
            },
        )
    }

    pub fn open(&self, key: &Key) -> Result<Repository> {
        Repository::open(self.backend(key.shared())?, key.shared())
    }

    /// Lists and verifies snapshots, and warns if the repository went back
    /// from what this client saw before.
    pub fn list_snapshots(
        &self,
        repo: &Repository,
        shared: &crate::keys::Shared,
        cache: &Cache,
    ) -> Result<crate::repository::snapshots::Listing> {
        let listing = crate::repository::snapshots::list_remembering(repo, shared, cache)?;
        crate::repository::rollback::check(cache, &shared.subkeys.cache, repo, Some(&listing));
        Ok(listing)
    }

    /// As [`Ctx::list_snapshots`], but reading and verifying every
    /// manifest whatever the cache remembers (for `check`).
    pub fn verify_snapshots(
        &self,
        repo: &Repository,
        shared: &crate::keys::Shared,
        cache: &Cache,
    ) -> Result<crate::repository::snapshots::Listing> {
        let listing = crate::repository::snapshots::list(repo, shared)?;
        crate::repository::rollback::check(cache, &shared.subkeys.cache, repo, Some(&listing));
        Ok(listing)
    }

    pub fn cache(&self) -> Cache {
        Cache::open(self.global.cache_dir.as_deref())
    }
}

pub fn run(command: Command, global: Global) -> Result<()> {
    let ctx = Ctx { global };
    match command {
        Command::Keygen(a) => keygen::run(&ctx, a),
        Command::Key(k) => key::run(&ctx, k),
        Command::Init => init::run(&ctx),
        Command::Backup(a) => backup::run(&ctx, a),
        Command::Snapshots(a) => snapshots::run(&ctx, a),
        Command::Ls(a) => ls::run_ls(&ctx, a),
        Command::Dump(a) => ls::run_dump(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Repair(crate::cli::RepairCommand::Index) => repair_index::run(&ctx),
        Command::Repair(crate::cli::RepairCommand::Snapshots(a)) => repair_snapshots::run(&ctx, a),
        Command::Unlock(a) => unlock::run(&ctx, a),
        Command::Forget(a) => forget::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Copy(a) => copy::run(&ctx, a),
        Command::Diff(a) => explore::run_diff(&ctx, a),
        Command::Find(a) => explore::run_find(&ctx, a),
        Command::Stats => explore::run_stats(&ctx),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let shell = match shell {
                crate::cli::CompletionShell::Bash => clap_complete::Shell::Bash,
                crate::cli::CompletionShell::Zsh => clap_complete::Shell::Zsh,
                crate::cli::CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(
                shell,
                &mut crate::cli::Cli::command(),
                "strongroom",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Mount(a) => mount::run(&ctx, a),
        Command::Ca(c) => ca::run(&ctx, &c),
        Command::Server(c) => server::run(&ctx, c),
    }
}

/// RFC 3339, UTC, seconds (nanoseconds when `precise`).
pub fn format_time(t: &Timestamp, precise: bool) -> String {
    match jiff::Timestamp::new(t.sec, if precise { t.nsec as i32 } else { 0 }) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("@{}", t.sec),
    }
}

pub fn parse_time(s: &str) -> Result<Timestamp> {
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| Exit::usage(format!("--time {s:?} is not an RFC 3339 time: {e}")))?;
    Ok(Timestamp {
        sec: ts.as_second(),
        nsec: ts.subsec_nanosecond() as u32,
    })
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v).context("writing JSON")?;
    writeln!(out)?;
    Ok(())
}
