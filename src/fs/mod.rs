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
        // A directory's walk recurses into its subdirectories, up to
        // `MAX_DEPTH` of them, and a thread waiting on work it handed out
        // takes other work on the same stack. Only what is used is mapped.
        .stack_size(64 << 20)
        .build()
        .map_err(|e| anyhow::anyhow!("starting the file threads: {e}"))
}

/// Raises the soft limit on open descriptors to the hard one: a backup holds
/// each directory open while its entries are read, one per level of depth
/// per file thread. Failure leaves the limit as it was.
pub fn raise_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit is capped by the kernel's `nr_open`.
    let most = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|c| c < most) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(most),
                maximum: limit.maximum,
            },
        );
    }
}
