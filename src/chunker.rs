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
        self.cut(data)
    }

    /// Where the chunk starting at `data` ends, looking no further than
    /// `data` (and at most `max_size`): the first cut point, or the end of
    /// what was looked at if none is found.
    fn cut(&self, data: &[u8]) -> usize {
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
        // Never an empty chunk, whatever the parameters.
        n.max(1)
    }

    /// Splits a buffer into chunk lengths. With `eof` false the tail that
    /// might continue past the buffer is left out; returns (lengths, consumed).
    ///
    /// The cuts are those of the whole stream: before the last `max_size`
    /// bytes of a buffer that does not end the stream, a cut point found
    /// within the buffer is the one more data would give (the scan tests
    /// positions in order and stops at the first), so only a tail with no
    /// cut point in it is left for the next buffer. That tail is what the
    /// caller copies ahead of the next read, so it is kept short.
    pub fn split(&self, data: &[u8], eof: bool) -> (Vec<usize>, usize) {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let n = if eof || rest.len() >= self.max {
                self.next_len(rest, eof)
            } else {
                // A cut found before the end is final; one at the very
                // end may not be (an odd last byte is never tested).
                match rest.len() > self.min {
                    true => self.cut(rest),
                    false => rest.len(),
                }
            };
            if !eof && n >= rest.len() && rest.len() < self.max {
                break;
            }
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

    #[test]
    fn cuts_do_not_depend_on_how_the_stream_is_split_into_buffers() {
        let p = ChunkerParams::default();
        let c = Chunker::new(&p, 7);
        let mut d = data(40 << 20);
        // A long run of zeroes: no cut point, chunks of the largest size.
        d[(9 << 20)..(27 << 20)].fill(0);
        let (whole, used) = c.split(&d, true);
        assert_eq!(used, d.len());
        for batch in [(1 << 20) + 1, 3 << 20, (8 << 20) - 1, 8 << 20, 16 << 20] {
            let mut lens = Vec::new();
            let mut carry: Vec<u8> = Vec::new();
            let mut off = 0;
            loop {
                let end = (off + batch).min(d.len());
                let eof = end == d.len();
                let mut buf = std::mem::take(&mut carry);
                buf.extend_from_slice(&d[off..end]);
                let (l, used) = c.split(&buf, eof);
                lens.extend(l);
                carry = buf[used..].to_vec();
                off = end;
                if eof {
                    assert!(carry.is_empty());
                    break;
                }
                // Only a tail without a cut point is carried.
                assert!(carry.len() < p.max as usize);
            }
            assert_eq!(lens, whole, "batches of {batch} bytes");
        }
    }
}
