//! Reading source files: without touching their access time, whole
//! buffers at a time, and only their data regions (holes stay holes).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A failure to read the source (skip that file, exit 3), as opposed to a
/// failure to write the repository (stop the backup).
#[derive(Debug)]
pub struct SourceError(pub io::Error);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

pub fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Tells the kernel a region will be read once, front to back: a larger
/// readahead. Only a hint; failure changes nothing.
pub fn advise_sequential(f: &File, start: u64, end: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise on a descriptor we own; it reads no memory.
    unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            start as libc::off_t,
            (end - start) as libc::off_t,
            libc::POSIX_FADV_SEQUENTIAL,
        );
    }
}

/// The data regions of a file, by SEEK_DATA/SEEK_HOLE; the whole file if
/// the filesystem cannot tell.
pub fn data_regions(f: &File, size: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return vec![(0, size)];
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return vec![(0, size)];
        }
        let end = (hole as u64).min(size);
        if end > data as u64 {
            out.push((data as u64, end));
        }
        pos = hole;
    }
    out
}
