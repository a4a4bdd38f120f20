#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe_controller::fuzz_targets::stats_topic(data));
