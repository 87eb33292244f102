//! Key files: the outer layer (read before any passphrase) and the secrets
//! inside.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::decode;
use strongroom::format::keyfile::Secrets;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = strongroom::keys::parse_on_disk(data, "fuzz.key".as_ref()) {
        let _ = f.seal_aad();
    }
    let _ = decode::<Secrets>(data, "key file");
});
