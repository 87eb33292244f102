//! strongroom: client-side encrypted, signed, deduplicating backups.
//!
//! Data flows one way: `cli → commands → repository → {crypto, chunker,
//! format}`, and `repository → cache → backend`.

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
pub mod keys;
pub mod progress;
pub mod repository;

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
