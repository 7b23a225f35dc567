//! Replays the inputs saved under `fuzz/regressions/<target>/` (crashes the
//! fuzzer found, once fixed, and a few corpus entries) through the bodies of
//! the pure fuzz targets, which live in `fuzz/logic/`. The inputs of the
//! `connection` and `connection_tls` targets, which drive the library's
//! test-only `server::harness`, are replayed by the `fuzz_regressions`
//! module of src/server/harness.rs. See fuzz/README.md.

use std::path::PathBuf;

#[path = "../fuzz/logic/client_frame.rs"]
mod client_frame;
#[path = "../fuzz/logic/http_request.rs"]
mod http_request;
#[path = "../fuzz/logic/ws_handshake.rs"]
mod ws_handshake;

/// Runs `body` on every file of `fuzz/regressions/<target>/`, naming each.
fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    for file in files {
        eprintln!("replaying {}", file.display());
        body(&std::fs::read(&file).expect("a readable input"));
    }
}

#[test]
fn http_request_inputs() {
    replay("http_request", http_request::run);
}

#[test]
fn client_frame_inputs() {
    replay("client_frame", client_frame::run);
}

#[test]
fn ws_handshake_inputs() {
    replay("ws_handshake", ws_handshake::run);
}
