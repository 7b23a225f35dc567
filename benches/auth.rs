//! Token authorization's costs, without sockets: one topic check against
//! a token of 20 patterns (a hit and a miss), and one token checked with
//! HS256 and with EdDSA (the cost of an `auth` message or an upgrade).

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pubsub::auth::{parse_public_keys, Rights, TokenSettings, TokenVerifier, TopicPatterns};
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"a benchmark secret of 32 bytes..";

/// 10 exact names and 10 prefixes, as a busy user's token might have.
fn twenty_patterns() -> Vec<String> {
    (0..10)
        .flat_map(|n| [format!("team.{n}.announcements"), format!("user.{n}.*")])
        .collect()
}

fn pattern_check(c: &mut Criterion) {
    let patterns = twenty_patterns();
    let rights = Rights::topics(TopicPatterns::new(&patterns), TopicPatterns::new(&patterns));
    let mut group = c.benchmark_group("may_subscribe_20_patterns");
    group.bench_function("hit", |b| {
        b.iter(|| rights.may_subscribe(black_box("user.9.inbox")))
    });
    group.bench_function("miss", |b| {
        b.iter(|| rights.may_subscribe(black_box("user.10.inbox")))
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(86_400);
    let claims = serde_json::json!({
        "sub": "user-42",
        "exp": exp.as_secs(),
        "topics": {"subscribe": twenty_patterns(), "publish": ["user.42.*"]},
    });
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let verifier = TokenVerifier::new(TokenSettings {
        hmac_secret: Some(SECRET),
        public_keys: parse_public_keys(&pair.public_key_pem()).unwrap(),
        audience: None,
        issuer: None,
        leeway: Duration::from_secs(5),
    });
    let hs256 = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let ed_key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    let eddsa = encode(&Header::new(Algorithm::EdDSA), &claims, &ed_key).unwrap();
    let mut group = c.benchmark_group("verify_token");
    for (name, token) in [("HS256", hs256), ("EdDSA", eddsa)] {
        verifier.verify(&token).expect("a valid token");
        group.bench_function(name, |b| b.iter(|| verifier.verify(black_box(&token))));
    }
    group.finish();
}

criterion_group!(benches, pattern_check, verify);
criterion_main!(benches);
