//! Index files, as they come out of their seal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::decode;
use strongroom::format::index::IndexFile;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<IndexFile>(data, "index file");
});
