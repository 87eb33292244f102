//! Snapshot manifests: the signed wrapper and the manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::manifest::Manifest;
use strongroom::format::{Signed, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Signed>(data, "manifest");
    let _ = decode::<Manifest>(data, "manifest");
});
