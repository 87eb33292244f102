//! `strongroom ca init` and `strongroom ca issue`: the private certificate
//! authority that the strongroom server's certificates come from and that
//! clients trust instead of the public WebPKI.
//!
//! Keys are ECDSA P-256. The CA certificate may sign only end-entity
//! certificates (path length 0) and is good for 10 years; a server
//! certificate names one host (a DNS name or an IP address), is for TLS
//! servers only and is good for 397 days. Private keys are written 0600,
//! never over an existing file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
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

/// Writes `bytes` to a new file `dir/name` with `mode`; an existing file
/// is never replaced.
fn write_new(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn init(ctx: &Ctx, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for name in ["ca.pem", "ca.key"] {
        if out.join(name).symlink_metadata().is_ok() {
            return Err(Exit::usage(format!(
                "{} already exists: a CA is made once (move it away to make another)",
                out.join(name).display()
            )));
        }
    }
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
    write_new(
        out,
        "ca.key",
        Zeroizing::new(key.serialize_pem()).as_bytes(),
        0o600,
    )?;
    write_new(out, "ca.pem", cert.pem().as_bytes(), 0o644)?;
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
        && host.len() <= 253
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
    let read = |name: &str| -> Result<Zeroizing<String>> {
        let p = ca.join(name);
        let meta = p
            .symlink_metadata()
            .with_context(|| format!("reading {}", p.display()))?;
        if !meta.is_file() || meta.len() > 64 << 10 {
            bail!("{} is not a CA file strongroom made", p.display());
        }
        Ok(Zeroizing::new(
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        ))
    };
    let ca_key = KeyPair::from_pem(&read("ca.key")?).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).context("reading the CA certificate")?;
    let key = KeyPair::generate().context("making the server key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![san];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, SERVER_DAYS);
    serial(&mut params)?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let name = host.to_ascii_lowercase();
    write_new(
        out,
        &format!("{name}.key"),
        Zeroizing::new(key.serialize_pem()).as_bytes(),
        0o600,
    )?;
    write_new(out, &format!("{name}.pem"), cert.pem().as_bytes(), 0o644)?;
    if !ctx.global.quiet {
        println!(
            "issued a certificate for {name}, good for {SERVER_DAYS} days: {}/{name}.pem and {name}.key",
            out.display()
        );
    }
    Ok(())
}
