//! Loading and saving key files, and asking for passphrases.
//!
//! A full key reads and writes everything; a writer key adds backups and
//! reads only the snapshot catalog. Which one a command holds is a type, so
//! a read path cannot even be written for a writer key.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::aead;
use crate::crypto::passphrase::KdfParams;
use crate::crypto::pk::{PrivateKey, PublicKey};
use crate::crypto::subkeys::Subkeys;
use crate::crypto::{SecretKey, random_array};
use crate::error::Exit;
use crate::format::envelope::{CERT_SIGNED_TYPE, WriterCertificate};
use crate::format::keyfile::{KEYFILE_VERSION, KeyFileOnDisk, KeyKind, MAGIC, Secrets, encode_secret};
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
    /// The root signing key; `None` in a reading key made by `key
    /// recover`, which reads everything and signs nothing.
    pub root: Option<PrivateKey>,
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
    /// The root signing key, or one sentence saying this key has none.
    pub fn root(&self) -> Result<&PrivateKey> {
        self.root.as_ref().ok_or_else(|| {
            crate::error::Exit::usage(
                "this is a reading key (made by `key recover`): it reads every snapshot but signs nothing; \
                 back up with a writer key, and change the repository with the full key",
            )
        })
    }

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
            root: Some(root),
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
        let signature = self.root()?.sign(CERT_SIGNED_TYPE, &body)?;
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
            s.root_private = k
                .root
                .as_ref()
                .map(|r| r.to_der().map(|d| d.to_vec()))
                .transpose()?;
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
    let plain = encode_secret(&secrets, secrets.size_hint());
    let (kind, host) = match key {
        Key::Full(_) => (KeyKind::Full, None),
        Key::Writer(k) => (KeyKind::Writer, Some(k.host.clone())),
    };
    let mut file = KeyFileOnDisk {
        magic: MAGIC.to_string(),
        version: KEYFILE_VERSION,
        kind,
        host,
        ca_pem: key.shared().ca_pem.clone(),
        kdf: None,
        secret: Vec::new(),
    };
    match passphrase {
        Some(p) => {
            let kdf = KdfParams::new()?;
            let k = kdf.derive(p)?;
            file.kdf = Some(kdf);
            file.secret = aead::seal(&k, &file.seal_aad(), &plain)?;
        }
        None => file.secret = plain.to_vec(),
    }
    let bytes = encode_secret(&file, file.secret.len() + file.seal_aad().len() + 64);
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
    parse_on_disk(&bytes, path)
}

/// Parses a key file's outer layer; `path` names it in errors.
pub fn parse_on_disk(bytes: &[u8], path: &Path) -> Result<KeyFileOnDisk> {
    let file: KeyFileOnDisk = postcard::from_bytes(bytes)
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
    // The binary did this first thing; a library user may not have.
    keep_out_of_core_dumps();
    let mut file = read_on_disk(path)?;
    let plain = match &file.kdf {
        None => Zeroizing::new(std::mem::take(&mut file.secret)),
        Some(kdf) => {
            let p = passphrases.get(&format!("Passphrase for {}: ", path.display()))?;
            let k = kdf.derive(&p)?;
            Zeroizing::new(aead::open(&k, &file.seal_aad(), &file.secret).map_err(|_| {
                anyhow!(
                    "wrong passphrase for key file {} (or the file is damaged or tampered)",
                    path.display()
                )
            })?)
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
            root: s
                .root_private
                .as_ref()
                .map(|d| PrivateKey::from_der(d))
                .transpose()?,
        }),
        KeyKind::Writer => {
            let (body, signature) = s.writer_certificate.clone().ok_or_else(damaged)?;
            let key = WriterKey {
                shared,
                host: file.host.clone().ok_or_else(damaged)?,
                signing: PrivateKey::from_der(s.writer_private.as_ref().ok_or_else(damaged)?)?,
                certificate: Signed { body, signature },
            };
            check_certificate(&key).with_context(|| format!("key file {} is refused", path.display()))?;
            Key::Writer(key)
        }
    })
}

/// A writer key's certificate must be the root's word for this very key:
/// signed by the root key in the same file, for the file's host, over the
/// file's signing key.
fn check_certificate(key: &WriterKey) -> Result<()> {
    let cert = &key.certificate;
    let c: WriterCertificate =
        postcard::from_bytes(&cert.body).map_err(|_| anyhow!("its writer certificate is malformed"))?;
    if c.format != FORMAT_VERSION {
        bail!(
            "its writer certificate has format {}, not {FORMAT_VERSION}",
            c.format
        );
    }
    if !key
        .shared
        .root_public
        .verify(CERT_SIGNED_TYPE, &cert.body, &cert.signature)
    {
        bail!("its writer certificate is not signed by its root key");
    }
    if c.host != key.host {
        bail!(
            "its writer certificate is for host {}, not for its host {}",
            c.host,
            key.host
        );
    }
    if c.public_key != key.signing.public().der() {
        bail!("its writer certificate certifies another signing key");
    }
    Ok(())
}

/// Keeps secrets out of core dumps and away from same-user debuggers: no
/// core file, and a process other unprivileged processes cannot ptrace or
/// read through /proc.
pub fn keep_out_of_core_dumps() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on this process, with a valid struct.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

static ENV_PASSPHRASE: OnceLock<Option<Zeroizing<Vec<u8>>>> = OnceLock::new();

/// Takes `STRONGROOM_PASSPHRASE` out of the environment: keeps the value,
/// wipes its bytes in the environment block (which `/proc/PID/environ`
/// shows) and removes the variable, so child processes never inherit it.
///
/// # Safety
/// Call once, at the start of `main`, before any other thread exists.
pub unsafe fn take_env_passphrase() {
    const NAME: &str = "STRONGROOM_PASSPHRASE";
    let value = std::env::var_os(NAME).map(|v| Zeroizing::new(v.into_encoded_bytes()));
    if value.is_some() {
        // SAFETY: no other thread reads or writes the environment (the
        // caller's promise); each entry is a NUL-terminated string we own
        // for the life of the process.
        unsafe {
            let mut p = environ;
            while !(*p).is_null() {
                let entry = *p;
                let len = libc::strlen(entry);
                let bytes = std::slice::from_raw_parts_mut(entry.cast::<u8>(), len);
                if bytes.len() > NAME.len() && bytes.starts_with(NAME.as_bytes()) && bytes[NAME.len()] == b'='
                {
                    bytes[NAME.len() + 1..].zeroize();
                }
                p = p.add(1);
            }
            std::env::remove_var(NAME);
        }
    }
    let _ = ENV_PASSPHRASE.set(value);
}

unsafe extern "C" {
    static mut environ: *mut *mut libc::c_char;
}

fn env_passphrase() -> Option<Zeroizing<Vec<u8>>> {
    match ENV_PASSPHRASE.get() {
        Some(v) => v.clone(),
        // A library user that never called `take_env_passphrase`.
        None => std::env::var_os("STRONGROOM_PASSPHRASE").map(|v| Zeroizing::new(v.into_encoded_bytes())),
    }
}

fn has_env_passphrase() -> bool {
    match ENV_PASSPHRASE.get() {
        Some(v) => v.is_some(),
        None => std::env::var_os("STRONGROOM_PASSPHRASE").is_some(),
    }
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
        if let Some(p) = env_passphrase() {
            return Ok(p);
        }
        if let Some(f) = std::env::var_os("STRONGROOM_PASSPHRASE_FILE") {
            return read_passphrase_file(Path::new(&f));
        }
        prompt_tty(prompt)
    }

    /// A new passphrase: from the same sources, or typed twice.
    pub fn get_new(&self) -> Result<Zeroizing<Vec<u8>>> {
        if self.file.is_some()
            || has_env_passphrase()
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
    let mut f =
        std::fs::File::open(path).with_context(|| format!("reading passphrase file {}", path.display()))?;
    let mut p = Zeroizing::new(Vec::new());
    let mut chunk = Zeroizing::new([0u8; 256]);
    loop {
        let n = match f.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading passphrase file {}", path.display())),
        };
        push_secret(&mut p, &chunk[..n]);
    }
    while p.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        p.pop();
    }
    Ok(p)
}

/// Appends to a secret buffer, growing it by hand so the old allocation is
/// wiped rather than left behind by a reallocation.
fn push_secret(buf: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let need = buf.len() + bytes.len();
    if need > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(64) * 2));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(bytes);
}

fn prompt_tty(prompt: &str) -> Result<Zeroizing<Vec<u8>>> {
    prompt_tty_or(
        prompt,
        "a passphrase is needed and there is no terminal to ask on: use --passphrase-file, \
         STRONGROOM_PASSPHRASE or STRONGROOM_PASSPHRASE_FILE",
    )
}

/// A strongroom server account's password: `--password-file`, else
/// `STRONGROOM_PASSWORD`, else asked on the terminal (twice when `new`).
pub fn account_password(file: Option<&Path>, prompt: &str, new: bool) -> Result<Zeroizing<Vec<u8>>> {
    const MISSING: &str = "a server account's password is needed and there is no terminal to ask on: \
        use --password-file or STRONGROOM_PASSWORD";
    let p = if let Some(f) = file {
        read_passphrase_file(f)?
    } else if let Some(v) = std::env::var_os("STRONGROOM_PASSWORD") {
        Zeroizing::new(v.into_encoded_bytes())
    } else {
        let a = prompt_tty_or(prompt, MISSING)?;
        if new && a != prompt_tty_or("Repeat it: ", MISSING)? {
            bail!("the two passwords differ");
        }
        a
    };
    if p.is_empty() {
        bail!("the password is empty");
    }
    Ok(p)
}

/// Asks on the terminal with echo off; `missing` says what to do when
/// there is none.
pub fn prompt_tty_or(prompt: &str, missing: &str) -> Result<Zeroizing<Vec<u8>>> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| Exit::usage(missing))?;
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
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
    // Asked only once echo is off: nothing typed after the prompt shows.
    let mut w = &tty;
    let asked = w.write_all(prompt.as_bytes()).and_then(|()| w.flush());
    // Byte by byte, unbuffered: no reader's buffer keeps a copy.
    let mut line = Zeroizing::new(Vec::new());
    let mut byte = Zeroizing::new([0u8; 1]);
    let mut r = &tty;
    let read = asked.and_then(|()| {
        loop {
            match r.read(&mut byte[..]) {
                Ok(0) => break Ok(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) => push_secret(&mut line, &byte[..]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        }
    });
    if have_termios {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    read.context("reading from the terminal")?;
    while line.last().is_some_and(|c| *c == b'\r') {
        line.pop();
    }
    Ok(line)
}
