//! Reading and verifying packs as a whole: their sealed headers, and
//! whether a pack is what its name and header say it is.

use anyhow::{Context, Result, anyhow, bail};

use crate::backend::{Backend, Kind, Pieces};
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
    let mut hashes = PackHashes::new(body_end(bytes.len(), trailer_of(bytes)));
    hashes.feed(bytes);
    verify_hashed(subkeys, repo_id, pack, bytes, hashes)
}

/// The last [`TRAILER_LEN`] bytes, if there are that many.
fn trailer_of(bytes: &[u8]) -> Option<&[u8]> {
    bytes.len().checked_sub(TRAILER_LEN).map(|t| &bytes[t..])
}

/// Where the body of a pack of `size` bytes ends: where its trailer places
/// the header. Where the trailer places none inside the pack, the whole is
/// the body, and the name decides first.
fn body_end(size: usize, trailer: Option<&[u8]>) -> usize {
    trailer
        .and_then(|t| pack::parse_trailer(t).ok())
        .filter(|h| h + TRAILER_LEN <= size)
        .map_or(size, |h| size - TRAILER_LEN - h)
}

/// A pack's two hashes taken in one pass as its bytes arrive, in order:
/// its name (the SHA-256 of every byte) and its body's (up to `body_end`).
struct PackHashes {
    hash: Sha256,
    body: Option<[u8; 32]>,
    body_end: usize,
    fed: usize,
}

impl PackHashes {
    fn new(body_end: usize) -> Self {
        PackHashes {
            hash: Sha256::new(),
            body: None,
            body_end,
            fed: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        match self.body_end.checked_sub(self.fed) {
            Some(left) if self.body.is_none() && left <= bytes.len() => {
                let (body, rest) = bytes.split_at(left);
                self.hash.update(body);
                self.body = Some(self.hash.clone().finalize().into());
                self.hash.update(rest);
            }
            _ => self.hash.update(bytes),
        }
        self.fed += bytes.len();
    }
}

/// The rest of [`verify`], once `bytes` have been hashed.
fn verify_hashed(
    subkeys: &Subkeys,
    repo_id: &Id,
    pack: &Id,
    bytes: &[u8],
    hashes: PackHashes,
) -> Result<PackEntries> {
    let size = bytes.len() as u64;
    let (body_end, body_sha256) = (hashes.body_end, hashes.body);
    if hashes.fed != bytes.len() || Id(hashes.hash.finalize().into()) != *pack {
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
    // The bytes are the pack's (its name says so): a body hashed to
    // another end was read from a trailer that is not this pack's.
    if body_end != bytes.len() - TRAILER_LEN - hlen {
        bail!("pack {pack} changed while it was read");
    }
    let header = parse_header(
        subkeys,
        repo_id,
        pack,
        &bytes[body_end..bytes.len() - TRAILER_LEN],
        size,
    )?;
    if body_sha256 != Some(header.body_sha256) {
        bail!("pack {pack} is damaged: its body is not the one its header describes");
    }
    Ok(PackEntries {
        pack: *pack,
        size,
        blobs: header.blobs,
    })
}

/// What a pack is read in from local storage: each piece is hashed while
/// the processor's caches still hold it. Here SHA-256 ran at 1.9 GB/s over
/// 4 MiB it had just touched and at 1.25 GB/s over 16 MiB.
const PIECE: u64 = 2 << 20;

/// Reads a whole pack and [`verify`]s it.
pub fn read_verified(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    pack: &Id,
) -> Result<(Vec<u8>, PackEntries)> {
    read_verified_with(backend, subkeys, repo_id, pack, &mut |_| {})
}

/// [`read_verified`], handing `arrived` the bytes read so far each time
/// more have arrived (every [`PIECE`] where the storage reads in pieces,
/// from one opening; else once): it can work on them while they are in
/// the processor's caches. They are the pack's only if this then returns
/// them.
pub fn read_verified_with(
    backend: &dyn Backend,
    subkeys: &Subkeys,
    repo_id: &Id,
    pack: &Id,
    arrived: &mut dyn FnMut(&[u8]),
) -> Result<(Vec<u8>, PackEntries)> {
    let name = pack.to_hex();
    let pieces = backend
        .open_pieces(Kind::Packs, &name)
        .with_context(|| format!("reading pack {pack}"))?;
    let (bytes, hashes) = match pieces {
        Some(p) => {
            read_in_pieces(p.as_ref(), &name, arrived).with_context(|| format!("reading pack {pack}"))?
        }
        None => {
            let bytes = crate::backend::read_bounded(backend, Kind::Packs, &name)
                .with_context(|| format!("reading pack {pack}"))?;
            let mut hashes = PackHashes::new(body_end(bytes.len(), trailer_of(&bytes)));
            hashes.feed(&bytes);
            arrived(&bytes);
            (bytes, hashes)
        }
    };
    let entries = verify_hashed(subkeys, repo_id, pack, &bytes, hashes)?;
    Ok((bytes, entries))
}

/// Reads a pack a [`PIECE`] at a time, hashing each as it arrives: its
/// trailer first, which says where the body (and its hash) ends.
fn read_in_pieces(
    p: &dyn Pieces,
    name: &str,
    arrived: &mut dyn FnMut(&[u8]),
) -> Result<(Vec<u8>, PackHashes)> {
    let kind = Kind::Packs;
    let (max, size) = (kind.max_size(), p.size());
    if size > max {
        bail!(
            "{} is {size} bytes, more than any {} strongroom writes ({max}): refused",
            kind.path(name),
            kind.dir()
        );
    }
    let mut trailer = Vec::new();
    if let Some(at) = size.checked_sub(TRAILER_LEN as u64) {
        p.read_into(at, TRAILER_LEN as u64, &mut trailer)?;
    }
    let trailer = (trailer.len() == TRAILER_LEN).then_some(&trailer[..]);
    let mut hashes = PackHashes::new(body_end(size as usize, trailer));
    let mut bytes = Vec::with_capacity(size as usize);
    while (bytes.len() as u64) < size {
        let before = bytes.len();
        p.read_into(before as u64, PIECE.min(size - before as u64), &mut bytes)?;
        if bytes.len() == before {
            bail!("{} was cut short while it was read", kind.path(name));
        }
        hashes.feed(&bytes[before..]);
        arrived(&bytes);
    }
    Ok((bytes, hashes))
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
