//! Closes the broker starts reach the client even while it is still
//! sending: the broker writes its close frame, shuts its write side and
//! reads and drops what the client still sends until the client closes,
//! instead of closing a socket with unread input (which resets the
//! connection and can destroy the close frame in flight). And a client
//! cannot hold a closing connection open by sending: it is cut at the
//! close deadline.

mod common;

use common::*;
use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Sends `bytes` (the client keeps writing while the broker has already
/// closed) and returns the close code the client reads afterwards, or why
/// it read none.
fn close_code_after_sending(raw: &mut RawWs, bytes: &[u8]) -> Result<u16, String> {
    if let Err(e) = raw.stream.write_all(bytes) {
        // The write may fail only if the broker reset the connection; the
        // close frame must still be readable then, so read on.
        eprintln!("write ended early: {e}");
    }
    loop {
        match raw.next_frame() {
            Ok(Some((0x8, payload))) if payload.len() >= 2 => {
                return Ok(u16::from_be_bytes([payload[0], payload[1]]))
            }
            Ok(Some((0x8, _))) => return Err("a close frame without a code".into()),
            Ok(Some(_)) => {}
            Ok(None) => return Err("end of stream before a close frame".into()),
            Err(e) => return Err(format!("no close frame: {e}")),
        }
    }
}

#[test]
fn messages_over_the_default_limit_always_get_their_1009() {
    let broker = TestBroker::start();
    for (size, runs) in [(2 * MIB, 10), (4 * MIB, 10), (16 * MIB, 4)] {
        let frame = masked_frame(0x81, &vec![b'x'; size]);
        for run in 0..runs {
            let mut raw = RawWs::connect(broker.addr);
            let code = close_code_after_sending(&mut raw, &frame);
            assert_eq!(code, Ok(1009), "a {size}-byte message, run {run}");
        }
    }
}

#[test]
fn protocol_errors_followed_by_more_input_get_their_close_code() {
    let broker = TestBroker::start();
    let junk = vec![0u8; 4 * MIB];
    let cases: [(&str, Vec<u8>, u16); 2] = [
        ("an unmasked frame", unmasked_frame(0x81, b"{}"), 1002),
        ("invalid UTF-8", masked_frame(0x81, &[0xff, 0xfe]), 1007),
    ];
    for (what, bad, expected) in cases {
        for run in 0..5 {
            let mut raw = RawWs::connect(broker.addr);
            let mut bytes = bad.clone();
            bytes.extend_from_slice(&junk);
            let code = close_code_after_sending(&mut raw, &bytes);
            assert_eq!(code, Ok(expected), "{what}, run {run}");
        }
    }
}

#[test]
fn a_client_that_keeps_sending_after_the_close_is_cut_at_the_deadline() {
    let broker = TestBroker::start();
    let mut raw = RawWs::connect(broker.addr);
    // An oversized message, then a trickle that would go on for 20 s: too
    // slow to reach the byte bound, so only the deadline can end it.
    raw.stream
        .write_all(&masked_frame(0x81, &vec![b'x'; 2 * MIB]))
        .unwrap();
    let mut writer = raw.stream.try_clone().unwrap();
    let (cut_tx, cut_rx) = mpsc::channel();
    let trickle = thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if writer.write_all(&[0u8; 512]).is_err() {
                let _ = cut_tx.send(Instant::now());
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    let code = close_code_after_sending(&mut raw, &[]);
    let closed_at = Instant::now();
    assert_eq!(code, Ok(1009));
    let cut_at = cut_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the broker kept the connection open for a client that kept sending");
    let lingered = cut_at.saturating_duration_since(closed_at);
    assert!(
        lingered < Duration::from_secs(4),
        "cut only after {lingered:?}"
    );
    trickle.join().unwrap();
}
