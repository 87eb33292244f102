//! What `statfs` (`df`, `stat -f`) shows of the mount: the logical size
//! of the snapshots shown and their number of entries, as the backups
//! counted them; nothing free, since nothing can be written.

use super::MountFs;

/// The block size `statfs` counts in.
pub const BLOCK: u32 = 4096;

/// The figures `statfs` answers.
pub struct Figures {
    /// The bytes of file content of the snapshots shown, in [`BLOCK`]s.
    pub blocks: u64,
    /// Their files and directories.
    pub files: u64,
}

impl MountFs {
    pub fn statfs(&self) -> Figures {
        let (mut bytes, mut files) = (0u64, 0u64);
        for s in &self.snapshots {
            let sum = &s.catalog.summary;
            bytes = bytes.saturating_add(sum.bytes_total);
            files = [sum.files_new, sum.files_changed, sum.files_unchanged, sum.dirs]
                .into_iter()
                .fold(files, u64::saturating_add);
        }
        Figures {
            blocks: bytes.div_ceil(BLOCK as u64),
            files,
        }
    }
}
