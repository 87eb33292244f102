//! Symlinks: a stored one's target bytes as stored (they need not be
//! UTF-8), a virtual one's relative target in the layout.

use fuser::Errno;

use super::{Entry, MountFs};
use crate::format::tree::NodeKind;

impl MountFs {
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let e = self.table.get(ino).ok_or(Errno::ENOENT)?;
        match &*e {
            Entry::Link { target, .. } => Ok(target.clone()),
            Entry::Stored(s) => {
                let node = self.node_of(s)?;
                match node.kind {
                    NodeKind::Symlink => Ok(node.target.clone()),
                    _ => Err(Errno::EINVAL),
                }
            }
            _ => Err(Errno::EINVAL),
        }
    }
}
