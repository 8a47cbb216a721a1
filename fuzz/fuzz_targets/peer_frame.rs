#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzz_entry::peer_frame(data));
