//! Loading and saving key files, and asking for passphrases.
//!
//! A full key reads and writes everything; a writer key adds backups and
//! reads only the snapshot catalog. Which one a command holds is a type, so
//! a read path cannot even be written for a writer key.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use zeroize::Zeroizing;

use crate::crypto::aead;
use crate::crypto::passphrase::KdfParams;
use crate::crypto::pk::{PrivateKey, PublicKey};
use crate::crypto::subkeys::Subkeys;
use crate::crypto::{SecretKey, random_array};
use crate::error::Exit;
use crate::format::envelope::{CERT_SIGNED_TYPE, WriterCertificate};
use crate::format::keyfile::{KEYFILE_VERSION, KeyFileOnDisk, KeyKind, MAGIC, SEAL_AAD, Secrets};
use crate::format::{FORMAT_VERSION, Signed, decode, encode};

/// What every key of a repository shares.
pub struct Shared {
    pub id_key: SecretKey,
    pub chunker_seed: u64,
    pub subkeys: Subkeys,
    pub root_public: PublicKey,
    pub ca_pem: Option<String>,
}

/// The full key: reads everything, signs as root.
pub struct FullKey {
    pub shared: Shared,
    pub encryption: PrivateKey,
    pub root: PrivateKey,
}

/// A writer key: backs up for one host, reads only the catalog.
pub struct WriterKey {
    pub shared: Shared,
    pub host: String,
    pub signing: PrivateKey,
    pub certificate: Signed,
}

pub enum Key {
    Full(FullKey),
    Writer(WriterKey),
}

impl Key {
    pub fn shared(&self) -> &Shared {
        match self {
            Key::Full(k) => &k.shared,
            Key::Writer(k) => &k.shared,
        }
    }

    /// The full key, or a usage error saying a writer key cannot do `what`.
    pub fn into_full(self, what: &str) -> Result<FullKey> {
        match self {
            Key::Full(k) => Ok(k),
            Key::Writer(k) => Err(Exit::usage(format!(
                "this is a writer key (host {}): it can add backups but cannot {what}; use the full key",
                k.host
            ))),
        }
    }
}

impl FullKey {
    pub fn generate(bits: usize) -> Result<FullKey> {
        let (encryption, root) = std::thread::scope(|s| {
            let enc = s.spawn(|| PrivateKey::generate(bits));
            let root = PrivateKey::generate(bits);
            (enc.join().expect("key generation thread panicked"), root)
        });
        let root = root?;
        let id_key = SecretKey::random()?;
        Ok(FullKey {
            shared: Shared {
                subkeys: Subkeys::derive(&id_key),
                id_key,
                chunker_seed: u64::from_le_bytes(random_array()?),
                root_public: root.public(),
                ca_pem: None,
            },
            encryption: encryption?,
            root,
        })
    }

    /// Makes a writer key for `host`, certified by this key's root.
    pub fn export_writer(&self, host: &str, bits: usize) -> Result<WriterKey> {
        let signing = PrivateKey::generate(bits)?;
        let cert = WriterCertificate {
            format: FORMAT_VERSION,
            host: host.to_string(),
            public_key: signing.public().der().to_vec(),
            created: crate::format::Timestamp::now().sec,
        };
        let body = encode(&cert);
        let signature = self.root.sign(CERT_SIGNED_TYPE, &body)?;
        Ok(WriterKey {
            shared: Shared {
                id_key: self.shared.id_key.clone(),
                chunker_seed: self.shared.chunker_seed,
                subkeys: Subkeys::derive(&self.shared.id_key),
                root_public: self.shared.root_public.clone(),
                ca_pem: self.shared.ca_pem.clone(),
            },
            host: host.to_string(),
            signing,
            certificate: Signed { body, signature },
        })
    }
}

fn secrets_of(key: &Key) -> Result<Secrets> {
    let shared = key.shared();
    let mut s = Secrets {
        id_key: shared.id_key.0,
        chunker_seed: shared.chunker_seed,
        root_public: shared.root_public.der().to_vec(),
        encryption_private: None,
        root_private: None,
        writer_private: None,
        writer_certificate: None,
    };
    match key {
        Key::Full(k) => {
            s.encryption_private = Some(k.encryption.to_der()?.to_vec());
            s.root_private = Some(k.root.to_der()?.to_vec());
        }
        Key::Writer(k) => {
            s.writer_private = Some(k.signing.to_der()?.to_vec());
            s.writer_certificate = Some((k.certificate.body.clone(), k.certificate.signature.clone()));
        }
    }
    Ok(s)
}

/// Writes a key file with mode 0600, refusing to overwrite one.
pub fn save(key: &Key, path: &Path, passphrase: Option<&[u8]>) -> Result<()> {
    let secrets = secrets_of(key)?;
    let plain = Zeroizing::new(encode(&secrets));
    let (kdf, secret) = match passphrase {
        Some(p) => {
            let kdf = KdfParams::new()?;
            let k = kdf.derive(p)?;
            (Some(kdf), aead::seal(&k, SEAL_AAD, &plain)?)
        }
        None => (None, plain.to_vec()),
    };
    let (kind, host) = match key {
        Key::Full(_) => (KeyKind::Full, None),
        Key::Writer(k) => (KeyKind::Writer, Some(k.host.clone())),
    };
    let file = KeyFileOnDisk {
        magic: MAGIC.to_string(),
        version: KEYFILE_VERSION,
        kind,
        host,
        ca_pem: key.shared().ca_pem.clone(),
        kdf,
        secret,
    };
    let bytes = encode(&file);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing key file {}", path.display()))?;
    Ok(())
}

/// Reads a key file's outer layer (no passphrase needed).
pub fn read_on_disk(path: &Path) -> Result<KeyFileOnDisk> {
    let bytes =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))?);
    let file: KeyFileOnDisk = postcard::from_bytes(&bytes)
        .ok()
        .filter(|f: &KeyFileOnDisk| f.magic == MAGIC)
        .ok_or_else(|| anyhow!("{} is not a strongroom key file", path.display()))?;
    if file.version != KEYFILE_VERSION {
        bail!(
            "key file {} has version {}, this strongroom reads version {KEYFILE_VERSION}",
            path.display(),
            file.version
        );
    }
    Ok(file)
}

/// Opens a key file, asking for its passphrase if it has one.
pub fn load(path: &Path, passphrases: &PassphraseSource) -> Result<Key> {
    let mut file = read_on_disk(path)?;
    let plain = match &file.kdf {
        None => Zeroizing::new(std::mem::take(&mut file.secret)),
        Some(kdf) => {
            let p = passphrases.get(&format!("Passphrase for {}: ", path.display()))?;
            let k = kdf.derive(&p)?;
            Zeroizing::new(
                aead::open(&k, SEAL_AAD, &file.secret)
                    .map_err(|_| anyhow!("wrong passphrase for key file {}", path.display()))?,
            )
        }
    };
    let s: Secrets = decode(&plain, &format!("key file {}", path.display()))?;
    let id_key = SecretKey(s.id_key);
    let shared = Shared {
        subkeys: Subkeys::derive(&id_key),
        id_key,
        chunker_seed: s.chunker_seed,
        root_public: PublicKey::from_der(&s.root_public)?,
        ca_pem: file.ca_pem.clone(),
    };
    let damaged = || anyhow!("key file {} is damaged: a key is missing", path.display());
    Ok(match file.kind {
        KeyKind::Full => Key::Full(FullKey {
            shared,
            encryption: PrivateKey::from_der(s.encryption_private.as_ref().ok_or_else(damaged)?)?,
            root: PrivateKey::from_der(s.root_private.as_ref().ok_or_else(damaged)?)?,
        }),
        KeyKind::Writer => {
            let (body, signature) = s.writer_certificate.clone().ok_or_else(damaged)?;
            Key::Writer(WriterKey {
                shared,
                host: file.host.clone().ok_or_else(damaged)?,
                signing: PrivateKey::from_der(s.writer_private.as_ref().ok_or_else(damaged)?)?,
                certificate: Signed { body, signature },
            })
        }
    })
}

/// Where passphrases come from, in order: `--passphrase-file`,
/// `STRONGROOM_PASSPHRASE`, `STRONGROOM_PASSPHRASE_FILE`, the terminal.
#[derive(Clone, Debug, Default)]
pub struct PassphraseSource {
    pub file: Option<PathBuf>,
}

impl PassphraseSource {
    pub fn get(&self, prompt: &str) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(f) = &self.file {
            return read_passphrase_file(f);
        }
        if let Some(p) = std::env::var_os("STRONGROOM_PASSPHRASE") {
            return Ok(Zeroizing::new(p.into_encoded_bytes()));
        }
        if let Some(f) = std::env::var_os("STRONGROOM_PASSPHRASE_FILE") {
            return read_passphrase_file(Path::new(&f));
        }
        prompt_tty(prompt)
    }

    /// A new passphrase: from the same sources, or typed twice.
    pub fn get_new(&self) -> Result<Zeroizing<Vec<u8>>> {
        if self.file.is_some()
            || std::env::var_os("STRONGROOM_PASSPHRASE").is_some()
            || std::env::var_os("STRONGROOM_PASSPHRASE_FILE").is_some()
        {
            let p = self.get("")?;
            if p.is_empty() {
                bail!("the new passphrase is empty; use --no-passphrase for a key file without one");
            }
            return Ok(p);
        }
        let a = prompt_tty("New passphrase: ")?;
        let b = prompt_tty("Repeat the new passphrase: ")?;
        if a != b {
            bail!("the two passphrases differ");
        }
        if a.is_empty() {
            bail!("the new passphrase is empty; use --no-passphrase for a key file without one");
        }
        Ok(a)
    }
}

fn read_passphrase_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut p = Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading passphrase file {}", path.display()))?,
    );
    while p.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        p.pop();
    }
    Ok(p)
}

fn prompt_tty(prompt: &str) -> Result<Zeroizing<Vec<u8>>> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            Exit::usage(
                "a passphrase is needed and there is no terminal to ask on: use --passphrase-file, \
                 STRONGROOM_PASSPHRASE or STRONGROOM_PASSPHRASE_FILE",
            )
        })?;
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
    let mut w = &tty;
    w.write_all(prompt.as_bytes())?;
    w.flush()?;
    // SAFETY: termios calls on a file descriptor we own, with a zeroed struct
    // the kernel fills in.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    let have_termios = unsafe { libc::tcgetattr(fd, &mut old) } == 0;
    if have_termios {
        let mut new = old;
        new.c_lflag &= !libc::ECHO;
        new.c_lflag |= libc::ECHONL;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &new) };
    }
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if have_termios {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    read.context("reading the passphrase from the terminal")?;
    let trimmed = line.trim_end_matches(['\n', '\r']);
    Ok(Zeroizing::new(trimmed.as_bytes().to_vec()))
}
