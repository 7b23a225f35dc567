//! The broker's hot paths, without sockets: encoding one event, fanning one
//! publish out to 1, 100 and 10,000 subscriber queues, decoding a publish
//! frame (small and 1 KiB, by the fast path and by serde's), encoding its
//! ack, and parsing and routing an HTTP request.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pubsub::broker::delivery::{ConnectionKey, SubscriberQueue, WorkerMailbox};
use pubsub::broker::{Broker, Replay};
use pubsub::http::handler::RestContext;
use pubsub::http::routes;
use pubsub::http::{parse_request, Parsed};
use pubsub::protocol::{
    encode_publish_ack, event_head, parse_client_frame, parse_client_frame_by_serde, stamp, Event,
};
use pubsub::ws::frame::{append_text_frame_with, shared_text_frame_of};
use serde_json::value::RawValue;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const MESSAGE: &str = r#"{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{"order_id":"123","amount":42.5,"items":["a","b","c"]}}"#;

fn encode(c: &mut Criterion) {
    let message = RawValue::from_string(MESSAGE.to_string()).unwrap();
    // Built once per topic.
    let head = event_head("orders");
    c.bench_function("encode_event_frame", |b| {
        b.iter(|| {
            let ts = stamp(SystemTime::now());
            let event = Event::new(
                black_box(&head),
                message.as_ref().into(),
                black_box(42),
                ts.as_str(),
            );
            shared_text_frame_of(&event.parts())
        })
    });
}

fn fan_out(c: &mut Criterion) {
    let message = RawValue::from_string(MESSAGE.to_string()).unwrap();
    let mut group = c.benchmark_group("publish_fan_out");
    for subscribers in [1usize, 100, 10_000] {
        let broker = Broker::new(100);
        let topic = broker.create_topic("orders").unwrap();
        let mailbox = WorkerMailbox::unpolled();
        // Queues deep enough for one timed batch; drained between batches.
        const BATCH: u64 = 64;
        let queues: Vec<Arc<SubscriberQueue>> = (0..subscribers)
            .map(|slot| {
                let key = ConnectionKey::new(slot, 0);
                Arc::new(SubscriberQueue::new(
                    BATCH as usize,
                    key,
                    Arc::clone(&mailbox),
                ))
            })
            .collect();
        for q in &queues {
            topic.subscribe(q, Replay::LastN(0), false).unwrap();
        }
        let mut posted = Vec::new();
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let batch = BATCH.min(iters - done);
                        let start = Instant::now();
                        for _ in 0..batch {
                            topic.publish(message.as_ref().into()).unwrap();
                        }
                        elapsed += start.elapsed();
                        done += batch;
                        posted.clear();
                        mailbox.drain(&mut posted);
                        for q in &queues {
                            q.unschedule();
                            q.clear();
                        }
                    }
                    elapsed
                })
            },
        );
        assert_eq!(
            topic.summary().subscribers,
            subscribers,
            "no subscriber overflowed"
        );
    }
    group.finish();
}

/// A message of about `size` bytes: an order with line items.
fn message_of(size: usize) -> String {
    let mut items = Vec::new();
    let mut n = 0;
    loop {
        let item = format!(
            r#"{{"sku":"SKU-{n:05}","qty":{},"price":{}.{:02},"gift":{},"note":null}}"#,
            n % 7 + 1,
            n * 13 % 200,
            n * 37 % 100,
            n % 2 == 0
        );
        let text = format!(
            r#"{{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{{"order_id":"123","items":[{}]}}}}"#,
            items
                .iter()
                .chain([&item])
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        );
        if text.len() > size {
            break;
        }
        items.push(item);
        n += 1;
    }
    format!(
        r#"{{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{{"order_id":"123","items":[{}]}}}}"#,
        items.join(",")
    )
}

fn decode(c: &mut Criterion) {
    let frames =
        [("small", MESSAGE.to_string()), ("1KiB", message_of(1024))].map(|(name, message)| {
            let frame = format!(
                r#"{{"type":"publish","topic":"orders","message":{message},"request_id":"r-1"}}"#
            );
            (name, frame)
        });
    // The fast path, then serde's path alone (what a frame the fast path
    // is not sure of costs).
    parse(c, "parse_publish_frame", &frames, |text| {
        parse_client_frame(text).is_ok()
    });
    parse(c, "parse_publish_frame_by_serde", &frames, |text| {
        parse_client_frame_by_serde(text).is_ok()
    });
}

fn parse(c: &mut Criterion, group: &str, frames: &[(&str, String)], parse: impl Fn(&str) -> bool) {
    let mut group = c.benchmark_group(group);
    for (name, frame) in frames {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), frame, |b, frame| {
            b.iter(|| parse(black_box(frame)))
        });
    }
    group.finish();
}

fn ack(c: &mut Criterion) {
    let mut out = Vec::new();
    c.bench_function("encode_publish_ack", |b| {
        b.iter(|| {
            out.clear();
            append_text_frame_with(&mut out, |text| {
                encode_publish_ack(
                    text,
                    Some(black_box("r-1")),
                    black_box("orders"),
                    black_box(42),
                    SystemTime::now(),
                )
            });
            out.len()
        })
    });
}

fn http(c: &mut Criterion) {
    let request = b"POST /topics HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"name\":\"orders\"}";
    c.bench_function("parse_http_request", |b| {
        b.iter(|| matches!(parse_request(black_box(request)), Parsed::Complete(..)))
    });
    let broker = Broker::new(10);
    broker.create_topic("orders").unwrap();
    let ctx = RestContext::new(&broker);
    let get = b"GET /topics HTTP/1.1\r\nHost: localhost:8080\r\n\r\n";
    c.bench_function("parse_and_route_get_topics", |b| {
        b.iter(|| match parse_request(black_box(get)) {
            Parsed::Complete(req, _) => routes::handle(&req, &ctx),
            _ => unreachable!(),
        })
    });
}

criterion_group!(benches, encode, fan_out, decode, ack, http);
criterion_main!(benches);
