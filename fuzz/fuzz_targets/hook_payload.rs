#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| muster_fuzzing::hook_payload(data));
