// The body of the `http_request` fuzz target, shared with the regression
// test that replays `fuzz/regressions/http_request/` (tests/fuzz_regressions.rs).
//
// The input is a connection's worth of bytes: every request in it is parsed
// and, when whole, routed, as the connection does with pipelined requests.
// Each input runs twice, on fresh brokers: open, and with an API key and
// HS256 tokens while draining. A topic is created only from a body that is
// a JSON object (serde would take `["x"]` for `{"name":"x"}`).

use pubsub::auth::{TokenSettings, TokenVerifier};
use pubsub::broker::Broker;
use pubsub::http::gate::Gate;
use pubsub::http::handler::{Action, RestContext};
use pubsub::http::routes::{handle, settle};
use pubsub::http::{parse_request, Parsed, Response};
use std::time::Duration;

pub fn run(data: &[u8]) {
    run_with(data, None, false);
    run_with(data, Some("s3cret"), true);
}

fn run_with(data: &[u8], api_key: Option<&str>, draining: bool) {
    // With a key, tokens too: the gate's every path.
    let tokens = api_key.map(|_| {
        TokenVerifier::new(TokenSettings {
            hmac_secret: Some(b"a-fuzzing-secret-of-thirty-two-bytes"),
            public_keys: Vec::new(),
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(5),
        })
    });
    let broker = Broker::new(4);
    for name in ["orders", "a b"] {
        broker.create_topic(name).expect("a valid, new topic");
    }
    let ctx = RestContext {
        gate: Gate {
            api_key,
            tokens: tokens.as_ref(),
            ..Gate::default()
        },
        draining,
        ..RestContext::new(&broker)
    };
    let mut rest = data;
    loop {
        match parse_request(rest) {
            Parsed::Partial => return,
            Parsed::Invalid(response) => {
                check_response(&response);
                match response.consumed {
                    Some(used) if !response.close => {
                        assert!(used > 0 && used <= rest.len(), "consumed {used}");
                        rest = &rest[used..];
                    }
                    _ => return,
                }
            }
            Parsed::Complete(request, used) => {
                assert!(used > 0 && used <= rest.len(), "used {used}");
                match settle(handle(&request, &ctx), &broker) {
                    Action::Respond(response) => {
                        check_response(&response);
                        if response.status == 201 {
                            let body = String::from_utf8_lossy(request.body);
                            assert!(
                                body.trim_start_matches([' ', '\t', '\n', '\r'])
                                    .starts_with('{'),
                                "created from {body:?}"
                            );
                        }
                    }
                    Action::Upgrade(switching, ..) => {
                        assert!(switching.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"))
                    }
                    Action::Change(change) => panic!("not settled: {change:?}"),
                }
                rest = &rest[used..];
            }
        }
    }
}

/// A response is well formed: a known status, and a JSON body that parses.
fn check_response(response: &Response) {
    let mut out = Vec::new();
    response.write_to(&mut out);
    let status_line = out.split(|&b| b == b'\r').next().unwrap_or_default();
    assert!(
        !status_line.ends_with(b" Unknown"),
        "status {} has no reason phrase",
        response.status
    );
    if response.content_type == "application/json" {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&response.body) {
            panic!("invalid JSON body ({e}): {:?}", response.body);
        }
    }
}
