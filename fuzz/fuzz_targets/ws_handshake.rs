#![no_main]

#[path = "../logic/ws_handshake.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::run(data));
