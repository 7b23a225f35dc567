//! The broker's hot paths, without sockets: encoding one event, fanning one
//! publish out to 1, 100 and 10,000 subscriber queues, decoding a publish
//! frame, and parsing and routing an HTTP request.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pubsub::broker::delivery::{ConnectionKey, SubscriberQueue, WorkerMailbox};
use pubsub::broker::{Broker, Replay};
use pubsub::http::handler::RestContext;
use pubsub::http::routes;
use pubsub::http::{parse_request, Parsed};
use pubsub::protocol::{encode_event, parse_client_frame, timestamp};
use pubsub::ws::frame::shared_text_frame;
use serde_json::value::RawValue;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const MESSAGE: &str = r#"{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{"order_id":"123","amount":42.5,"items":["a","b","c"]}}"#;

fn encode(c: &mut Criterion) {
    let message = RawValue::from_string(MESSAGE.to_string()).unwrap();
    c.bench_function("encode_event_frame", |b| {
        b.iter(|| {
            shared_text_frame(&encode_event(
                black_box("orders"),
                &message,
                black_box(42),
                &timestamp(SystemTime::now()),
            ))
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
                            topic.publish(&message).unwrap();
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

fn decode(c: &mut Criterion) {
    let frame =
        format!(r#"{{"type":"publish","topic":"orders","message":{MESSAGE},"request_id":"r-1"}}"#);
    c.bench_function("parse_publish_frame", |b| {
        b.iter(|| parse_client_frame(black_box(&frame)).is_ok())
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

criterion_group!(benches, encode, fan_out, decode, http);
criterion_main!(benches);
