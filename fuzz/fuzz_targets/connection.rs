#![no_main]

#[path = "../logic/connection_program.rs"]
mod connection_program;
#[path = "../logic/connection.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::run(data));
