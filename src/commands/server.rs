//! `strongroom server serve` and `strongroom server account …`.

use std::collections::BTreeMap;

use anyhow::Result;
use zeroize::Zeroizing;

use super::Ctx;
use crate::cli::{AccountCommand, ServerCommand, StoreArgs};
use crate::error::Exit;
use crate::server::accounts::{Accounts, Role, valid_name};
use crate::server::store::{Store, Where};

pub fn run(ctx: &Ctx, cmd: ServerCommand) -> Result<()> {
    match cmd {
        ServerCommand::Serve {
            listen,
            cert,
            key,
            store,
        } => crate::server::serve(&listen, &cert, &key, open(&store)?),
        ServerCommand::Account(a) => account(ctx, a),
    }
}

fn open(s: &StoreArgs) -> Result<Store> {
    match (&s.data, &s.s3) {
        (Some(d), None) => Store::open(Where::Data(d.clone())),
        (None, Some(u)) => Store::open(Where::S3(u.clone())),
        _ => Err(Exit::usage("give one of --data DIR and --s3 URL")),
    }
}

/// `REPO=ROLE`, both checked.
fn repo_role(s: &str) -> Result<(String, Role)> {
    let bad = || Exit::usage(format!("{s:?}: expected REPO=admin, REPO=writer or REPO=reader"));
    let (repo, role) = s.split_once('=').ok_or_else(bad)?;
    if !valid_name(repo) {
        return Err(Exit::usage(format!(
            "{repo:?} is not a valid repository name (1-64 letters, digits, '.', '_', '-', starting with a letter or digit)"
        )));
    }
    Ok((repo.to_string(), Role::parse(role).ok_or_else(bad)?))
}

fn account(ctx: &Ctx, cmd: AccountCommand) -> Result<()> {
    let password_file = ctx.global.password_file.as_deref();
    let say = |s: String| {
        if !ctx.global.quiet {
            println!("{s}");
        }
    };
    match cmd {
        AccountCommand::Add { name, roles, store } => {
            let roles: BTreeMap<String, Role> = roles.iter().map(|r| repo_role(r)).collect::<Result<_>>()?;
            let store = open(&store)?;
            if !valid_name(&name) {
                return Err(Exit::usage(format!("{name:?} is not a valid account name")));
            }
            let password =
                crate::keys::account_password(password_file, &format!("Password of {name}: "), true)?;
            store.accounts.add(&name, Some(&password), roles)?;
            say(format!("added account {name}"));
        }
        AccountCommand::Grant { name, role, store } => {
            let (repo, role) = repo_role(&role)?;
            let accounts = &open(&store)?.accounts;
            let mut a = accounts.must_get(&name)?;
            a.roles.insert(repo.clone(), role);
            accounts.put(&a)?;
            say(format!(
                "account {name} is now a {} of repository {repo}",
                role.name()
            ));
        }
        AccountCommand::Revoke { name, repo, store } => {
            let accounts = &open(&store)?.accounts;
            let mut a = accounts.must_get(&name)?;
            if a.roles.remove(&repo).is_none() {
                return Err(Exit::usage(format!(
                    "account {name} holds no role on repository {repo}"
                )));
            }
            accounts.put(&a)?;
            say(format!(
                "account {name} no longer holds a role on repository {repo}"
            ));
        }
        AccountCommand::Passwd { name, token, store } => {
            let accounts = &open(&store)?.accounts;
            let mut a = accounts.must_get(&name)?;
            if let Some(token) = token {
                let token = if token.is_empty() {
                    match std::env::var("STRONGROOM_RESET_TOKEN") {
                        Ok(t) => Zeroizing::new(t),
                        Err(_) => {
                            let t = crate::keys::prompt_tty_or(
                                "Reset token: ",
                                "a reset token is needed: give --token TOKEN or STRONGROOM_RESET_TOKEN",
                            )?;
                            Zeroizing::new(String::from_utf8_lossy(&t).into_owned())
                        }
                    }
                } else {
                    Zeroizing::new(token)
                };
                Accounts::check_reset_token(&a, &token)?;
            }
            let password =
                crate::keys::account_password(password_file, &format!("New password of {name}: "), true)?;
            accounts.set_password(&mut a, &password)?;
            say(format!(
                "set the password of account {name}; its sessions have ended"
            ));
        }
        AccountCommand::Reset { name, store } => {
            let accounts = &open(&store)?.accounts;
            let mut a = accounts.must_get(&name)?;
            let token = accounts.reset(&mut a)?;
            if ctx.global.json {
                super::print_json(&serde_json::json!({ "account": name, "token": token.as_str() }))?;
            } else {
                println!("{}", token.as_str());
                eprintln!(
                    "the password of account {name} is cleared; the token above sets a new one within 24 hours, once:\n  \
                     strongroom server account passwd {name} --token (then type the token)"
                );
            }
        }
        AccountCommand::Remove { name, store } => {
            let accounts = &open(&store)?.accounts;
            accounts.must_get(&name)?;
            accounts.remove(&name)?;
            say(format!("removed account {name}; its sessions have ended"));
        }
        AccountCommand::List { store } => {
            let accounts = &open(&store)?.accounts;
            let mut all = Vec::new();
            for name in accounts.names()? {
                if let Some(a) = accounts.get(&name)? {
                    all.push(a);
                }
            }
            if ctx.global.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|a| {
                        let roles: BTreeMap<_, _> = a.roles.iter().map(|(r, x)| (r.clone(), x.name())).collect();
                        serde_json::json!({ "account": a.name, "roles": roles, "password_set": !a.password.is_empty() })
                    })
                    .collect();
                super::print_json(&v)?;
            } else {
                for a in &all {
                    let roles: Vec<String> =
                        a.roles.iter().map(|(r, x)| format!("{r}={}", x.name())).collect();
                    println!("{}\t{}", a.name, roles.join(" "));
                }
            }
        }
    }
    Ok(())
}
