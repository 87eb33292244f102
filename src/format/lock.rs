//! `locks/<id>`: who is working on the repository, sealed under the index
//! subkey (every key can read and write locks; the storage cannot).

use serde::{Deserialize, Serialize};

use super::Timestamp;

pub const SEAL_KIND: &str = "lock";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lock {
    pub format: u16,
    pub host: String,
    pub pid: u32,
    /// An exclusive lock (removing data) excludes every other lock; shared
    /// locks (adding or reading data) exclude only exclusive ones.
    pub exclusive: bool,
    pub purpose: String,
    pub created: Timestamp,
    /// Rewritten while the work goes on; a lock not refreshed for
    /// `STALE_AFTER_SECS` belongs to a process that died.
    pub refreshed: Timestamp,
}

pub const REFRESH_SECS: u64 = 300;
pub const STALE_AFTER_SECS: i64 = 1800;
