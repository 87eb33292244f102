//! Key envelopes: the signed wrapper, the envelope, its writer certificate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::envelope::{Envelope, Signer, WriterCertificate};
use strongroom::format::{Signed, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Signed>(data, "envelope");
    if let Ok(e) = decode::<Envelope>(data, "envelope")
        && let Signer::Writer(cert) = &e.signer
    {
        let _ = decode::<WriterCertificate>(&cert.body, "certificate");
    }
});
