//! strongroom: client-side encrypted, signed, deduplicating backups.
//!
//! Data flows one way: `cli → commands → repository → {crypto, chunker,
//! format}`, `repository → cache → backend`, and `mount → repository`
//! (the reading side only).

pub mod aligned;
pub mod backend;
pub mod cache;
pub mod chunker;
pub mod cli;
pub mod commands;
pub mod crypto;
pub mod error;
pub mod escape;
pub mod format;
pub mod fs;
pub mod interrupt;
pub mod keys;
pub mod manpages;
pub mod mount;
pub mod progress;
pub mod repository;
pub mod server;

use std::sync::atomic::{AtomicI8, Ordering};

static VERBOSITY: AtomicI8 = AtomicI8::new(0);

pub fn set_verbosity(v: i8) {
    VERBOSITY.store(v, Ordering::Relaxed);
}

pub fn verbosity() -> i8 {
    VERBOSITY.load(Ordering::Relaxed)
}

/// A warning on stderr, unless `-q`; escaped, as it may name what a
/// repository holds.
pub fn warn(msg: &str) {
    if verbosity() >= 0 {
        eprintln!("warning: {}", escape::text(msg));
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer pointer and length describe `buf`.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether no process has this pid (any more), on this machine.
pub fn process_is_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the pid exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}
