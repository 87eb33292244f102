//! The repository config: the signed wrapper and the config body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::config::Config;
use strongroom::format::{Signed, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Signed>(data, "config");
    let _ = decode::<Config>(data, "config");
});
