// The body of the `connection` fuzz target, shared with the regression test
// that replays `fuzz/regressions/connection/` (the `fuzz_regressions` module
// at the bottom of src/server/harness.rs includes this file, since
// `ConnectionDriver` exists only under `cfg(test)` and `cfg(fuzzing)`).
//
// The input is a small program run against one connection, whose peer
// speaks plaintext; its steps, and the check of the output, are in
// `connection_program.rs` (a sibling module). The opcodes `F8`..`FF` do
// nothing here.
//
// Checked while it runs: the output (`OutputCheck`), up to the last bytes
// of the turn that reaped the connection. Checked at the end: once the
// peer's stream has ended and it reads everything, the connection is
// closed within two seconds.

use super::connection_program::{config, OutputCheck, Program};
use pubsub::server::harness::ConnectionDriver;
use std::time::Duration;

pub fn run(data: &[u8]) {
    let mut driver = ConnectionDriver::new(config());
    driver.create_topic("t");
    driver.create_topic("u");
    let mut check = OutputCheck::default();
    let mut program = Program::new(data);
    while let Some(op) = program.op() {
        if let Some(step) = program.step(op) {
            step.apply(&mut driver);
        }
        check.feed(driver.output(), |_| {});
        if driver.is_closed() {
            return;
        }
    }
    driver.set_write_room(None);
    check.feed(driver.output(), |_| {});
    if driver.is_closed() {
        return;
    }
    driver.send_end_of_stream();
    driver.advance(Duration::from_secs(2));
    check.feed(driver.output(), |_| {});
    assert!(
        driver.is_closed(),
        "the peer ended its stream and read everything, yet the connection is open"
    );
}
