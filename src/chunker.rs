//! Content-defined chunking (FastCDC 2020) with the repository's seeded gear
//! table, so chunk boundaries differ from other repositories'.

use std::borrow::Cow;

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

use crate::format::config::ChunkerParams;

pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Chunker {
    pub fn new(params: &ChunkerParams, seed: u64) -> Chunker {
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
            masks: select_masks(params.avg as usize, Normalization::Level1),
            gear,
            gear_ls,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// The length of the next chunk at the start of `data`. With `eof`
    /// false, `data` must hold at least `max_size` bytes.
    pub fn next_len(&self, data: &[u8], eof: bool) -> usize {
        debug_assert!(eof || data.len() >= self.max);
        if data.len() <= self.min {
            return data.len();
        }
        let (ms, ml) = self.masks;
        let (_, n) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            ms,
            ml,
            ms << 1,
            ml << 1,
            &self.gear,
            &self.gear_ls,
        );
        n.max(1)
    }

    /// Splits a buffer into chunk lengths. With `eof` false the tail that
    /// might continue past the buffer is left out; returns (lengths, consumed).
    pub fn split(&self, data: &[u8], eof: bool) -> (Vec<usize>, usize) {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            if !eof && rest.len() < self.max {
                break;
            }
            let n = self.next_len(rest, eof);
            out.push(n);
            pos += n;
        }
        (out, pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_9abc_def0u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_are_content_defined_and_seeded() {
        let p = ChunkerParams::default();
        let d = data(20 << 20);
        let c = Chunker::new(&p, 1);
        let (a, used) = c.split(&d, true);
        assert_eq!(used, d.len());
        assert!(a.iter().all(|&n| n <= p.max as usize));
        assert!(a.len() > 5);
        // Inserting a byte at the front moves only the first boundary.
        let mut d2 = vec![7u8];
        d2.extend_from_slice(&d);
        let (b, _) = c.split(&d2, true);
        let tail = |v: &[usize]| v.iter().rev().take(5).copied().collect::<Vec<_>>();
        assert_eq!(tail(&a), tail(&b));
        // Another seed cuts elsewhere.
        let (s, _) = Chunker::new(&p, 99).split(&d, true);
        assert_ne!(a, s);
    }
}
