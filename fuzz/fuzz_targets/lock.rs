//! Locks, as they come out of their seal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::decode;
use strongroom::format::lock::Lock;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Lock>(data, "lock");
});
