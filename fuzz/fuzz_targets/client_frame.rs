#![no_main]

#[path = "../logic/client_frame.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::run(data));
