//! Accounts of the strongroom server: who may log in, with which password,
//! holding which role on which repository.
//!
//! Passwords are stored as PBKDF2-HMAC-SHA256 PHC strings
//! (`$pbkdf2-sha256$i=600000,l=32$salt$hash`): the round count travels
//! with each hash, so raising [`ROUNDS`] strengthens each password at its
//! next change while older hashes still verify. A login gives a session
//! token (HMAC-SHA256 under the store's session key, valid for
//! [`SESSION_SECS`]) so the key derivation is paid once per client run,
//! and every instance on the same store honours it. A token names the
//! account's generation, which every password change, reset and removal
//! renews: old tokens die with it.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use hmac::{KeyInit, Mac};
use pbkdf2::password_hash::{CustomizedPasswordHasher, phc::PasswordHash};
use pbkdf2::{Params, Pbkdf2};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backend::{self, Backend, Kind};

/// PBKDF2 rounds of new hashes (OWASP's 2023 figure for HMAC-SHA256).
pub const ROUNDS: u32 = 600_000;
/// The fewest rounds a stored hash may have: one with fewer is refused
/// instead of verified, so a store edited down to a cheap hash does not
/// open brute force.
pub const MIN_ROUNDS: u32 = 100_000;
/// The most rounds verified: a stored hash cannot make a login cost more.
pub const MAX_ROUNDS: u32 = 10_000_000;
/// How long a session token is good for.
pub const SESSION_SECS: i64 = 8 * 3600;
/// How long a reset token is good for.
pub const RESET_SECS: i64 = 24 * 3600;
/// The format of account records and of the server's settings.
const FORMAT: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, deleting and replacing included.
    Admin,
    /// Append-only: adds objects, creates and removes its own locks.
    Writer,
    /// Reads.
    Reader,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "writer" => Some(Role::Writer),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// SHA-256 of the one-time token, hex: the token itself is never stored.
    pub token_sha256: String,
    pub expires: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub format: u16,
    pub name: String,
    /// A PHC string; empty while only a reset token can set one.
    pub password: String,
    /// Renewed whenever the password changes: sessions name it.
    pub generation: String,
    pub roles: BTreeMap<String, Role>,
    pub reset: Option<Reset>,
}

/// The server's own settings, shared by every instance on the store.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    format: u16,
    /// The HMAC key of session tokens, hex.
    session_key: String,
}

/// An account or repository name: 1–64 of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit (so never `.`, `..` or the store's `_server`).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = Zeroizing::new(vec![0u8; bytes]);
    crate::crypto::fill_random(&mut b)?;
    Ok(hex::encode(&*b))
}

/// A new PHC string for `password`.
pub fn hash_password(password: &[u8]) -> Result<String> {
    let salt: [u8; 16] = crate::crypto::random_array()?;
    let params = Params::new_with_output_len(ROUNDS, 32).map_err(|e| anyhow!("PBKDF2 parameters: {e}"))?;
    let hash = Pbkdf2::SHA256
        .hash_password_customized(password, &salt, None, None, params)
        .map_err(|e| anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored`, compared in
/// constant time. A malformed hash, another algorithm or a round count
/// outside [`MIN_ROUNDS`]..=[`MAX_ROUNDS`] never matches.
pub fn verify_password(stored: &str, password: &[u8]) -> bool {
    let Ok(parsed) = stored.parse::<PasswordHash>() else {
        return false;
    };
    if parsed.algorithm.as_str() != "pbkdf2-sha256" || parsed.version.is_some() {
        return false;
    }
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if !(MIN_ROUNDS..=MAX_ROUNDS).contains(&params.rounds()) {
        return false;
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    match Pbkdf2::SHA256.hash_password_customized(password, salt.as_ref(), None, None, params) {
        // `Output`'s equality is constant-time.
        Ok(h) => h.hash.is_some_and(|got| got == expected),
        Err(_) => false,
    }
}

/// A hash that matches no password, verified for unknown accounts so a
/// login takes as long whether the account exists or not.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(b"no account has this password").unwrap_or_default())
}

/// Accounts and settings, in the store's `_server` area (a backend of its
/// own: accounts are its `keys/NAME` objects, the settings its `config`).
pub struct Accounts {
    meta: std::sync::Arc<dyn Backend>,
}

impl Accounts {
    pub fn new(meta: std::sync::Arc<dyn Backend>) -> Accounts {
        Accounts { meta }
    }

    /// Makes the area and its session key, unless they exist.
    pub fn prepare(&self) -> Result<()> {
        match self.meta.stat(Kind::Config, "config") {
            Ok(_) => return Ok(()),
            Err(e) if backend::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        let _ = self.meta.create();
        let settings = Settings {
            format: FORMAT,
            session_key: random_hex(32)?,
        };
        // Exclusive: of two instances starting at once, one key wins.
        self.meta
            .write_new(Kind::Config, "config", &serde_json::to_vec(&settings)?)
            .map(|_| ())
            .context("writing the server's settings")
    }

    /// The session key every instance signs tokens with.
    pub fn session_key(&self) -> Result<Zeroizing<Vec<u8>>> {
        let bytes = backend::read_bounded(self.meta.as_ref(), Kind::Config, "config").with_context(|| {
            format!(
                "reading the server's settings in {} (make an account first: strongroom server account add)",
                self.meta.location()
            )
        })?;
        let s: Settings = serde_json::from_slice(&bytes).context("the server's settings are damaged")?;
        let key = Zeroizing::new(hex::decode(&s.session_key).unwrap_or_default());
        if s.format != FORMAT || key.len() != 32 {
            bail!("the server's settings are damaged: no usable session key");
        }
        Ok(key)
    }

    pub fn get(&self, name: &str) -> Result<Option<Account>> {
        if !valid_name(name) {
            return Ok(None);
        }
        let bytes = match backend::read_bounded(self.meta.as_ref(), Kind::Keys, name) {
            Ok(b) => b,
            Err(e) if backend::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.context(format!("reading account {name}"))),
        };
        let a: Account =
            serde_json::from_slice(&bytes).with_context(|| format!("account {name} is damaged"))?;
        if a.format != FORMAT || a.name != name {
            bail!("account {name} is damaged");
        }
        Ok(Some(a))
    }

    pub fn must_get(&self, name: &str) -> Result<Account> {
        self.get(name)?
            .ok_or_else(|| crate::error::Exit::usage(format!("there is no account {name}")))
    }

    pub fn put(&self, a: &Account) -> Result<()> {
        self.meta
            .write(Kind::Keys, &a.name, &serde_json::to_vec_pretty(a)?)
            .with_context(|| format!("writing account {}", a.name))
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        self.meta
            .delete(Kind::Keys, name)
            .with_context(|| format!("removing account {name}"))
    }

    pub fn names(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .meta
            .list(Kind::Keys)?
            .into_iter()
            .map(|l| l.name)
            .filter(|n| valid_name(n))
            .collect();
        v.sort();
        Ok(v)
    }

    /// A new account, with a password or (without one) waiting for a reset
    /// token.
    pub fn add(&self, name: &str, password: Option<&[u8]>, roles: BTreeMap<String, Role>) -> Result<Account> {
        if !valid_name(name) {
            return Err(crate::error::Exit::usage(format!(
                "{name:?} is not a valid account name (1-64 letters, digits, '.', '_', '-')"
            )));
        }
        self.prepare()?;
        if self.get(name)?.is_some() {
            return Err(crate::error::Exit::usage(format!(
                "account {name} already exists"
            )));
        }
        let a = Account {
            format: FORMAT,
            name: name.to_string(),
            password: password.map(hash_password).transpose()?.unwrap_or_default(),
            generation: random_hex(16)?,
            roles,
            reset: None,
        };
        self.put(&a)?;
        Ok(a)
    }

    /// Sets a new password (and ends the account's sessions).
    pub fn set_password(&self, a: &mut Account, password: &[u8]) -> Result<()> {
        a.password = hash_password(password)?;
        a.generation = random_hex(16)?;
        a.reset = None;
        self.put(a)
    }

    /// Clears the password, ends the sessions, and returns a one-time token
    /// that sets a new one within [`RESET_SECS`].
    pub fn reset(&self, a: &mut Account) -> Result<Zeroizing<String>> {
        let token = Zeroizing::new(random_hex(24)?);
        a.password = String::new();
        a.generation = random_hex(16)?;
        a.reset = Some(Reset {
            token_sha256: hex::encode(crate::crypto::sha256(token.as_bytes())),
            expires: now() + RESET_SECS,
        });
        self.put(a)?;
        Ok(token)
    }

    /// Checks a reset token: right, unexpired, and not used before.
    pub fn check_reset_token(a: &Account, token: &str) -> Result<()> {
        let Some(r) = &a.reset else {
            bail!("account {} has no reset token outstanding", a.name);
        };
        let got = crate::crypto::sha256(token.trim().as_bytes());
        let want = hex::decode(&r.token_sha256).unwrap_or_default();
        if !bool::from(subtle_eq(&got, &want)) {
            bail!("that is not the reset token of account {}", a.name);
        }
        if now() > r.expires {
            bail!(
                "the reset token of account {} has expired; ask for another",
                a.name
            );
        }
        Ok(())
    }
}

impl Accounts {
    /// Which account wrote lock `lock` of `repo` (kept beside the accounts
    /// as `locks/REPO.LOCK`), if any did.
    pub fn lock_owner(&self, repo: &str, lock: &str) -> Result<Option<String>> {
        match self.meta.read(Kind::Locks, &format!("{repo}.{lock}")) {
            Ok(b) => Ok(String::from_utf8(b).ok().filter(|n| valid_name(n))),
            Err(e) if backend::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn set_lock_owner(&self, repo: &str, lock: &str, account: &str) -> Result<()> {
        self.meta
            .write(Kind::Locks, &format!("{repo}.{lock}"), account.as_bytes())
    }

    pub fn clear_lock_owner(&self, repo: &str, lock: &str) -> Result<()> {
        self.meta.delete(Kind::Locks, &format!("{repo}.{lock}"))
    }
}

fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    if a.len() != b.len() {
        return subtle::Choice::from(0);
    }
    a.ct_eq(b)
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn token_mac(key: &[u8], payload: &str) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"strongroom session v1\0");
    mac.update(payload.as_bytes());
    mac
}

/// A session token for `a`: `ACCOUNT:GENERATION:EXPIRES:MAC`.
pub fn issue_token(key: &[u8], a: &Account) -> String {
    let payload = format!("{}:{}:{}", a.name, a.generation, now() + SESSION_SECS);
    let mac = token_mac(key, &payload).finalize().into_bytes();
    format!("{payload}:{}", hex::encode(mac))
}

/// The account and generation a token names, if its MAC is right and it
/// has not expired; the caller checks the generation is the account's.
pub fn check_token(key: &[u8], token: &str) -> Option<(String, String)> {
    let (payload, mac) = token.rsplit_once(':')?;
    let mac = hex::decode(mac).ok()?;
    token_mac(key, payload).verify_slice(&mac).ok()?;
    let mut parts = payload.split(':');
    let (name, generation, expires) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || expires.parse::<i64>().ok()? < now() {
        return None;
    }
    Some((name.to_string(), generation.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_to_phc_strings_and_verify() {
        let h = hash_password(b"correct horse").unwrap();
        assert!(h.starts_with("$pbkdf2-sha256$i=600000,l=32$"), "{h}");
        assert!(verify_password(&h, b"correct horse"));
        assert!(!verify_password(&h, b"correct horsf"));
        assert!(!verify_password("", b""));
        assert!(!verify_password(
            "$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHQ$AAAA",
            b"x"
        ));
        // Fewer rounds than the floor never verify, even when right.
        let salt = b"saltsaltsaltsalt";
        let weak = Pbkdf2::SHA256
            .hash_password_customized(
                b"pw",
                salt,
                None,
                None,
                Params::new_with_output_len(1000, 32).unwrap(),
            )
            .unwrap()
            .to_string();
        assert!(!verify_password(&weak, b"pw"));
        // A raised count of an older hash still verifies.
        let older = Pbkdf2::SHA256
            .hash_password_customized(
                b"pw",
                salt,
                None,
                None,
                Params::new_with_output_len(MIN_ROUNDS, 32).unwrap(),
            )
            .unwrap()
            .to_string();
        assert!(verify_password(&older, b"pw"));
    }

    #[test]
    fn tokens_are_bound_to_key_account_and_time() {
        let key = [7u8; 32];
        let a = Account {
            format: FORMAT,
            name: "host-1".into(),
            password: String::new(),
            generation: "g1".into(),
            roles: BTreeMap::new(),
            reset: None,
        };
        let t = issue_token(&key, &a);
        assert_eq!(check_token(&key, &t), Some(("host-1".into(), "g1".into())));
        assert_eq!(check_token(&[8u8; 32], &t), None);
        let forged = t.replacen("host-1", "host-2", 1);
        assert_eq!(check_token(&key, &forged), None);
        let payload = format!("host-1:g1:{}", now() - 1);
        let expired = format!(
            "{payload}:{}",
            hex::encode(token_mac(&key, &payload).finalize().into_bytes())
        );
        assert_eq!(check_token(&key, &expired), None);
    }

    #[test]
    fn names_are_plain() {
        for good in ["a", "host-1", "Web.01", "x_y"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "_server",
            "-x",
            "a/b",
            "a%2e",
            "a\0b",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
