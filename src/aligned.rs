//! Byte buffers aligned to 4096 bytes, for `O_DIRECT`: large reads of the
//! source and writes of packs go between the disk and these buffers
//! without a copy through the page cache. On this machine kind that copy,
//! into pages the kernel had to find and fault in first, was a third of
//! the CPU a 1 GiB backup took.
//!
//! Each buffer is its own anonymous mapping: only the pages written are
//! resident, growing moves page tables rather than bytes (`mremap`), and
//! a dropped buffer's memory goes back to the system at once instead of
//! staying in an allocator's arena.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// The alignment `O_DIRECT` is given here: of buffers, file offsets and
/// lengths (the largest logical block size in use). Mappings start on a
/// page boundary, and pages are at least this large.
pub const ALIGN: usize = 4096;

/// A growable byte buffer whose first byte is aligned to [`ALIGN`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: it owns its mapping, like a `Vec<u8>` its allocation.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

/// A mapping the system refused: out of memory, as for any allocation.
fn mapping_failed(cap: usize) -> ! {
    std::alloc::handle_alloc_error(
        std::alloc::Layout::from_size_align(cap, ALIGN).unwrap_or(std::alloc::Layout::new::<u8>()),
    )
}

/// A new zero-filled mapping of `cap` bytes (a multiple of [`ALIGN`]).
fn map(cap: usize) -> NonNull<u8> {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            cap,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        mapping_failed(cap);
    }
    NonNull::new(p.cast()).unwrap_or_else(|| mapping_failed(cap))
}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
        }
    }
}

impl AlignedBuf {
    /// `len` zero bytes, rounded up to whole aligned blocks.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let cap = len.next_multiple_of(ALIGN);
        if cap == 0 {
            return AlignedBuf::default();
        }
        // A fresh mapping reads as zeroes; its pages become resident only
        // when written.
        AlignedBuf {
            ptr: map(cap),
            len: cap,
            cap,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Room for at least `additional` more bytes, allocated exactly (to
    /// whole blocks).
    pub fn reserve_exact(&mut self, additional: usize) {
        let need = self
            .len
            .checked_add(additional)
            .filter(|&n| n <= isize::MAX as usize)
            .expect("a buffer smaller than isize::MAX");
        if need <= self.cap {
            return;
        }
        let cap = need.next_multiple_of(ALIGN);
        if self.cap == 0 {
            self.ptr = map(cap);
            self.cap = cap;
            return;
        }
        // SAFETY: `ptr` is the start of a mapping of `self.cap` bytes this
        // buffer owns; on success the old range is no longer used.
        let p = unsafe { libc::mremap(self.ptr.as_ptr().cast(), self.cap, cap, libc::MREMAP_MAYMOVE) };
        if p == libc::MAP_FAILED {
            mapping_failed(cap);
        }
        self.ptr = NonNull::new(p.cast()).unwrap_or_else(|| mapping_failed(cap));
        self.cap = cap;
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if self.cap - self.len < bytes.len() {
            self.reserve_exact(bytes.len().max(self.cap));
        }
        // SAFETY: there is room for `bytes` after `len`, and a slice
        // cannot overlap memory this buffer owns exclusively.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(self.len), bytes.len());
        }
        self.len += bytes.len();
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised (written by
        // `extend_from_slice` or zeroed), and `ptr` is valid for them (or
        // dangling with `len` 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and the borrow is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: `ptr` starts a mapping of `cap` bytes this buffer
            // owns, unmapped only here.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
        }
    }
}

/// Sets the C allocator up for this program's threads, before any starts.
///
/// glibc gives each thread an arena of its own, up to eight per core, and
/// a block freed stays in its arena for that arena's next allocations.
/// With a dozen threads, the backup of a source tree spread its blobs and
/// file buffers over eleven arenas holding 83 MB between them; two arenas
/// hold what one run needs at once. (The large buffers are mappings of
/// their own, [`AlignedBuf`], and go back to the system when dropped.)
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's parameters; called before
    // any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Sets the C allocator up for a backup: blocks of [`MMAP_FROM`] and more
/// are mappings of their own, returned to the system when freed.
///
/// glibc raises that threshold, by default, to the size of each mapped
/// block freed, up to 32 MiB; from then on, file buffers and sealed blobs
/// of a few hundred kilobytes to a few megabytes came from the arenas,
/// and what they left behind between them stayed resident: 20 MB of the
/// heap was free at the peak of a source tree's backup, and that peak
/// swung by as much. Fixed at 512 KiB, the heap's free part stayed under
/// 5 MB; the page faults of the new mappings cost a 1 GiB backup 0.35 s
/// of system CPU and 0.05 s of its 2 s.
///
/// Called before the backup starts its threads: glibc's `free` reads and
/// rewrites these parameters without a lock.
pub fn tune_allocator_for_backup() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's parameters; no other
    // thread allocates yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_FROM as libc::c_int);
    }
}

/// See [`tune_allocator_for_backup`].
const MMAP_FROM: usize = 512 * 1024;

/// Turns `O_DIRECT` on or off for an open file; false if it cannot be.
pub fn set_direct(f: &File, on: bool) -> bool {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller holds; it reads no memory.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

/// Whether an error says the file or its filesystem refuses this request
/// under `O_DIRECT` (rather than that the disk failed).
pub fn refused_direct(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Writes `data` at the start of `f`: its whole aligned blocks around the
/// page cache if `data` is aligned and the file allows it, the rest
/// through the page cache. The caller syncs.
pub fn write_all_direct(f: &File, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let blocks = data.len() / ALIGN * ALIGN;
    if blocks > 0 && (data.as_ptr() as usize).is_multiple_of(ALIGN) && set_direct(f, true) {
        let direct = f.write_all_at(&data[..blocks], 0);
        set_direct(f, false);
        match direct {
            Ok(()) => return f.write_all_at(&data[blocks..], blocks as u64),
            Err(e) if refused_direct(&e) => {}
            Err(e) => return Err(e),
        }
    }
    f.write_all_at(data, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_stay_aligned_as_they_grow_and_keep_their_bytes() {
        let mut b = AlignedBuf::default();
        assert!(b.is_empty());
        for i in 0..10_000u32 {
            b.extend_from_slice(&i.to_le_bytes());
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        }
        assert_eq!(b.len(), 40_000);
        assert!(
            b.chunks(4)
                .enumerate()
                .all(|(i, c)| c == (i as u32).to_le_bytes())
        );
        b.clear();
        assert!(b.is_empty() && b.capacity() >= 40_000);
        let mut exact = AlignedBuf::default();
        exact.reserve_exact(3 * ALIGN + 1);
        assert_eq!(exact.capacity(), 4 * ALIGN);
        let z = AlignedBuf::zeroed(ALIGN + 1);
        assert_eq!((z.len(), z.as_ptr() as usize % ALIGN), (2 * ALIGN, 0));
        assert!(z.iter().all(|&x| x == 0));
    }

    #[test]
    fn a_direct_write_holds_every_byte_aligned_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = AlignedBuf::default();
        for i in 0..(3 * ALIGN + 123) {
            data.extend_from_slice(&[(i % 251) as u8]);
        }
        for (name, bytes) in [
            ("aligned", &data[..]),
            ("unaligned", &data[1..]),
            ("short", &data[..10]),
        ] {
            let p = dir.path().join(name);
            let f = File::create(&p).unwrap();
            write_all_direct(&f, bytes).unwrap();
            f.sync_all().unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), bytes, "{name}");
        }
    }
}
