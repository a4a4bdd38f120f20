#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe::fuzz_targets::mdns_txt(data));
