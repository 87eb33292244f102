//! A pack's trailer and header, as the header comes out of its seal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::decode;
use strongroom::format::pack::{PackHeader, parse_trailer};

fuzz_target!(|data: &[u8]| {
    let _ = parse_trailer(&data[data.len().saturating_sub(8)..]);
    let _ = decode::<PackHeader>(data, "pack header");
});
