//! Key files: the outer layer and the secrets inside.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::decode;
use strongroom::format::keyfile::{KeyFileOnDisk, Secrets};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<KeyFileOnDisk>(data, "key file");
    let _ = decode::<Secrets>(data, "key file");
});
