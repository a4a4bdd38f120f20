#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe_agent::fuzz_targets::env_file(data));
