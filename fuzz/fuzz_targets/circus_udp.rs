#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe::fuzz_targets::circus_udp(data));
