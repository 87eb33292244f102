//! The local filesystem side: reading entries with all their metadata for a
//! backup, and writing them back exactly on restore.

pub mod backup;
pub mod beneath;
pub mod exclude;
pub mod filescache;
pub mod meta;
pub mod place;
pub mod restore;
pub mod source;

/// Threads for walking, reading and writing the filesystem: several per
/// core, because a thread waiting for a cold disk uses none, and the disk
/// serves many requests at once faster than one after another.
/// `per_core` threads per core, at least `2 * per_core`.
pub fn io_pool(per_core: usize) -> anyhow::Result<rayon::ThreadPool> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads((cores * per_core).min(64))
        .thread_name(|i| format!("io-{i}"))
        .build()
        .map_err(|e| anyhow::anyhow!("starting the file threads: {e}"))
}
