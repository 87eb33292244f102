//! A manifest's catalog, as it comes out of its seal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::decode;
use strongroom::format::manifest::Catalog;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Catalog>(data, "catalog");
});
