//! The error policy and the exit codes.
//!
//! Every failure reaches the user as one chain of sentences, outermost first,
//! printed by `main` with `{:#}`: the outer context names what was being done
//! (the snapshot, the path), the inner ones name the object and the pack.
//! Code below the commands returns `anyhow::Result` and adds context where it
//! knows a name the caller does not. Nothing panics on bad input: a damaged
//! object is an error naming it, never an `unwrap`.
//!
//! Exit codes, documented in the README:
//! - 0: success;
//! - 1: failure (the error says what and where);
//! - 2: usage error (bad arguments, a snapshot that does not exist, a key of
//!   the wrong kind for the command);
//! - 3: a backup was written but some files could not be read, or some paths
//!   given do not exist (each named on stderr);
//! - 130: interrupted by SIGINT or SIGTERM (`crate::interrupt`).
//!
//! With `--json`, `main` also prints the error on stdout as one JSON object,
//! `{"message_type":"error","message":…,"exit_code":…}`; on stderr the chain
//! is escaped for the terminal, as it may name what a repository holds.

use std::fmt;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for any failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for usage errors.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a backup that completed but skipped unreadable files.
pub const EXIT_PARTIAL: i32 = 3;

/// An error that carries its own exit code; anything else exits with 1.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code: EXIT_USAGE,
            message: message.into(),
        })
    }

    pub fn partial(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code: EXIT_PARTIAL,
            message: message.into(),
        })
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code an error chain asks for.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Exit>().map(|e| e.code))
        .unwrap_or(EXIT_FAILURE)
}

/// Whether the chain ends in a broken pipe (`strongroom dump … | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
