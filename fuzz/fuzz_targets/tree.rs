//! Tree blobs: what a writer-key holder can seal into any snapshot.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom::format::tree::Tree;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data, "tree") {
        // Accepted trees are canonical: they encode back to the same bytes.
        assert_eq!(strongroom::format::encode(&tree), data);
    }
});
