//! Reading and verifying packs as a whole: their sealed headers, and
//! whether a pack is what its name and header say it is.

use anyhow::{Context, Result, anyhow, bail};

use crate::backend::{Backend, Kind};
use crate::crypto::aead;
use crate::crypto::subkeys::Subkeys;
use crate::format::index::PackEntries;
use crate::format::pack::{self, PackHeader, TRAILER_LEN};
use crate::format::{FORMAT_VERSION, Id, aad, decode};
use sha2::{Digest, Sha256};

/// Opens a sealed header and checks that every blob lies inside the body.
pub fn parse_header(
    subkeys: &Subkeys,
    repo_id: &Id,
    pack: &Id,
    sealed: &[u8],
    size: u64,
) -> Result<PackHeader> {
    let plain = aead::open_salted(&subkeys.index, &aad(pack::SEAL_KIND, repo_id, &[]), sealed)
        .map_err(|e| anyhow!("opening the header of pack {pack} failed: {e}"))?;
    let header: PackHeader = decode(&plain, &format!("the header of pack {pack}"))?;
    if header.format != FORMAT_VERSION {
        bail!(
            "pack {pack} has format {}, expected {FORMAT_VERSION}",
            header.format
        );
    }
    let data_end = size - TRAILER_LEN as u64 - sealed.len() as u64;
    for e in &header.blobs {
        if e.offset as u64 + e.length as u64 > data_end {
            bail!("pack {pack} is damaged: blob {} lies outside its data", e.id);
        }
    }
    Ok(header)
}

/// Verifies a whole pack: its name is the SHA-256 of its bytes, its header
/// opens, and the header's body hash matches the body. Returns its entries.
pub fn verify(subkeys: &Subkeys, repo_id: &Id, pack: &Id, bytes: &[u8]) -> Result<PackEntries> {
    let size = bytes.len() as u64;
    // One pass over the bytes: the body's hash, then on over the header and
    // trailer, the pack's name. Where the trailer does not place a header,
    // the whole is hashed, and the name decides first.
    let trailer = bytes
        .len()
        .checked_sub(TRAILER_LEN)
        .and_then(|t| pack::parse_trailer(&bytes[t..]).ok())
        .filter(|h| h + TRAILER_LEN <= bytes.len());
    let body_end = trailer.map_or(bytes.len(), |h| bytes.len() - TRAILER_LEN - h);
    let mut hash = Sha256::new();
    hash.update(&bytes[..body_end]);
    let body_sha256: [u8; 32] = hash.clone().finalize().into();
    hash.update(&bytes[body_end..]);
    if Id(hash.finalize().into()) != *pack {
        bail!("pack {pack} is damaged: its content does not match its name");
    }
    if bytes.len() < TRAILER_LEN {
        bail!("pack {pack} is too short to be a pack");
    }
    let hlen =
        pack::parse_trailer(&bytes[bytes.len() - TRAILER_LEN..]).with_context(|| format!("pack {pack}"))?;
    if hlen + TRAILER_LEN > bytes.len() {
        bail!("pack {pack} is damaged: its header length is out of range");
    }
    let header = parse_header(
        subkeys,
        repo_id,
        pack,
        &bytes[body_end..bytes.len() - TRAILER_LEN],
        size,
    )?;
    if body_sha256 != header.body_sha256 {
        bail!("pack {pack} is damaged: its body is not the one its header describes");
    }
    Ok(PackEntries {
        pack: *pack,
        size,
        blobs: header.blobs,
    })
}

/// Reads a whole pack and [`verify`]s it.
pub fn read_verified(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    pack: &Id,
) -> Result<(Vec<u8>, PackEntries)> {
    let bytes = crate::backend::read_bounded(backend, Kind::Packs, &pack.to_hex())
        .with_context(|| format!("reading pack {pack}"))?;
    let entries = verify(subkeys, repo_id, pack, &bytes)?;
    Ok((bytes, entries))
}

/// Every object under `packs/` named like a pack, with its listed size.
pub fn listed(backend: &dyn Backend) -> Result<std::collections::HashMap<Id, u64>> {
    Ok(backend
        .list(Kind::Packs)
        .context("listing packs")?
        .into_iter()
        .filter_map(|l| Id::from_hex(&l.name).map(|id| (id, l.size)))
        .collect())
}
