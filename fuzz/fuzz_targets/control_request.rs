#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe::fuzz_targets::control_request(data));
