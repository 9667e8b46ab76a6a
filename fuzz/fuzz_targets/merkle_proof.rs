#![no_main]
// The checks live in the library so the stable regression test runs the same code.
libfuzzer_sys::fuzz_target!(|data: &[u8]| liaison_fuzz::merkle_proof(data));
