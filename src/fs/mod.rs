//! The local filesystem side: reading entries with all their metadata for a
//! backup, and writing them back exactly on restore.

pub mod backup;
pub mod beneath;
pub mod exclude;
pub mod filescache;
pub mod meta;
pub mod restore;
pub mod source;
