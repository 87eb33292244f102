//! `strongroom ca init` and `strongroom ca issue`: the private certificate
//! authority that the strongroom server's certificates come from and that
//! clients trust instead of the public WebPKI.
//!
//! Keys are ECDSA P-256. The CA certificate may sign only end-entity
//! certificates (path length 0) and is good for 10 years; a server
//! certificate names one host (a DNS name or an IP address), is for TLS
//! servers only and is good for 397 days, never past its CA. Keys are
//! written 0600 into a directory of the user's that nobody else can write
//! (a new one is made 0700), through its descriptor, never over an
//! existing file; a certificate and its key are written both or neither.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use zeroize::Zeroizing;

use super::Ctx;
use crate::cli::CaCommand;
use crate::error::Exit;

const CA_DAYS: i64 = 3650;
const SERVER_DAYS: i64 = 397;

pub fn run(ctx: &Ctx, cmd: &CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init { out } => init(ctx, out),
        CaCommand::Issue { ca, host, out } => issue(ctx, ca, host, out),
    }
}

/// `days` from now, and a minute ago (clocks differ a little).
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(days);
}

/// A random serial number (positive, 16 bytes).
fn serial(params: &mut CertificateParams) -> Result<()> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no randomness: {e}"))?;
    b[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&b));
    Ok(())
}

/// The output directory: made 0700 if missing; one that exists must be
/// the user's own and writable by nobody else (someone who can write
/// there could swap the CA's files later).
fn out_dir(out: &Path) -> Result<OwnedFd> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let dir = rfs::open(
        out,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {} (a directory, not a symlink)", out.display()))?;
    let st = rfs::fstat(&dir).with_context(|| format!("reading {}", out.display()))?;
    if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o022 != 0 {
        return Err(Exit::usage(format!(
            "{} is not a directory of yours that only you can write: choose another for keys",
            out.display()
        )));
    }
    Ok(dir)
}

/// Writes the new files `(name, bytes, mode)` into `dir`, all or none: a
/// name already taken refuses them all, and a failure removes what was
/// written.
fn write_all_new(dir: &OwnedFd, shown: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    for (name, _, _) in files {
        if rfs::statat(dir, *name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(Exit::usage(format!(
                "{} already exists: nothing was written",
                shown.join(name).display()
            )));
        }
    }
    let mut written: Vec<&str> = Vec::new();
    for (name, bytes, mode) in files {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let done = rfs::openat(dir, *name, flags, Mode::from_raw_mode(*mode))
            .map_err(std::io::Error::from)
            .and_then(|fd| {
                // The mode as asked, whatever the umask.
                rfs::fchmod(&fd, Mode::from_raw_mode(*mode))?;
                let mut f = std::fs::File::from(fd);
                f.write_all(bytes)?;
                f.sync_all()
            });
        if let Err(e) = done {
            written.push(name);
            for w in &written {
                let _ = rfs::unlinkat(dir, *w, AtFlags::empty());
            }
            return Err(e).with_context(|| format!("writing {}", shown.join(name).display()));
        }
        written.push(name);
    }
    rfs::fsync(dir).with_context(|| format!("syncing {}", shown.display()))?;
    Ok(())
}

fn init(ctx: &Ctx, out: &Path) -> Result<()> {
    let dir = out_dir(out)?;
    let key = KeyPair::generate().context("making the CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "strongroom CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_DAYS);
    serial(&mut params)?;
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    write_all_new(
        &dir,
        out,
        &[
            ("ca.key", key_pem.as_bytes(), 0o600),
            ("ca.pem", cert.pem().as_bytes(), 0o644),
        ],
    )?;
    if !ctx.global.quiet {
        println!(
            "made a CA in {}: ca.pem (give it to clients: --ca, or keygen --ca) and ca.key (keep it offline)",
            out.display()
        );
    }
    Ok(())
}

/// A host name or IP address that is safe as a file name and valid in a
/// certificate.
fn check_host(host: &str) -> Result<SanType> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let ok = !host.is_empty()
        // Also a file name: NAME.key within 255 bytes.
        && host.len() <= 250
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(Exit::usage(format!(
            "--host {}: not a host name or IP address",
            crate::escape::text(host)
        )));
    }
    Ok(SanType::DnsName(
        host.to_ascii_lowercase()
            .try_into()
            .map_err(|_| anyhow!("--host {host}: not a DNS name"))?,
    ))
}

fn issue(ctx: &Ctx, ca: &Path, host: &str, out: &Path) -> Result<()> {
    let san = check_host(host)?;
    let ca_dir = rfs::open(
        ca,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", ca.display()))?;
    let ca_key = read_ca_file(&ca_dir, ca, "ca.key", true)?;
    let ca_key = KeyPair::from_pem(std::str::from_utf8(&ca_key).unwrap_or_default())
        .with_context(|| format!("reading {}", ca.join("ca.key").display()))?;
    let ca_pem = read_ca_file(&ca_dir, ca, "ca.pem", false)?;
    let ca_not_after =
        check_ca(&ca_pem, &ca_key).with_context(|| format!("{}", ca.join("ca.pem").display()))?;
    let issuer = Issuer::from_ca_cert_pem(std::str::from_utf8(&ca_pem).unwrap_or_default(), ca_key)
        .context("reading the CA certificate")?;
    let key = KeyPair::generate().context("making the server key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let name = host.to_ascii_lowercase();
    dn.push(DnType::CommonName, name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![san];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, SERVER_DAYS);
    // Never past the CA.
    params.not_after = params.not_after.min(ca_not_after);
    serial(&mut params)?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;
    let dir = out_dir(out)?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    let (key_name, cert_name) = (format!("{name}.key"), format!("{name}.pem"));
    write_all_new(
        &dir,
        out,
        &[
            (&key_name, key_pem.as_bytes(), 0o600),
            (&cert_name, cert.pem().as_bytes(), 0o644),
        ],
    )?;
    if !ctx.global.quiet {
        println!(
            "issued a certificate for {name}, good until {}: {}/{cert_name} and {key_name}",
            params.not_after.date(),
            out.display()
        );
    }
    Ok(())
}

/// A file of the CA directory, read through its descriptor: a regular
/// file (not a symlink) of at most 64 KiB; the key must be readable by its
/// owner only.
fn read_ca_file(dir: &OwnedFd, shown: &Path, name: &str, secret: bool) -> Result<Zeroizing<Vec<u8>>> {
    let path = shown.join(name);
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {} (a file, not a symlink)", path.display()))?;
    let st = rfs::fstat(&fd).with_context(|| format!("reading {}", path.display()))?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile || st.st_size > 64 << 10 {
        bail!("{} is not a CA file strongroom made", path.display());
    }
    if secret && st.st_mode & 0o077 != 0 {
        return Err(Exit::usage(format!(
            "{} can be read by others (mode {:o}): `chmod 600` it, and think about who has read it",
            path.display(),
            st.st_mode & 0o777
        )));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(st.st_size as usize + 1));
    std::fs::File::from(fd)
        .take(64 << 10)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// Checks that `pem` is a CA certificate, valid now, whose public key is
/// `key`'s; its end of validity.
fn check_ca(pem: &[u8], key: &KeyPair) -> Result<time::OffsetDateTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| anyhow!("not a PEM certificate"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| anyhow!("not an X.509 certificate"))?;
    if !cert.is_ca() {
        bail!("not a CA certificate");
    }
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        bail!("does not belong to ca.key beside it");
    }
    let not_after = time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|_| anyhow!("an unreadable end of validity"))?;
    if not_after <= time::OffsetDateTime::now_utc() {
        bail!("the CA expired on {}", not_after.date());
    }
    Ok(not_after)
}

/// The CA certificate a key file is to carry (`--ca PEM` of `keygen` and
/// `key export-writer`): one PEM CA certificate, nothing else.
pub fn certificate_to_carry(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the CA certificate {}", path.display()))?;
    let bad = |why: &str| anyhow!("--ca {}: {why}", path.display());
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not a PEM certificate"))?;
    if text.len() > 64 << 10 || text.contains("PRIVATE KEY") {
        return Err(bad(
            "not a CA certificate alone (a private key must never travel in a key file)",
        ));
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|_| bad("not a PEM certificate"))?;
    let cert = pem.parse_x509().map_err(|_| bad("not an X.509 certificate"))?;
    if !cert.is_ca() {
        return Err(bad(
            "not a CA certificate (give ca.pem from `strongroom ca init`)",
        ));
    }
    Ok(text.to_string())
}
