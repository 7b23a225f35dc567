//! No token reaches a log: the real binary at `LOG_LEVEL=trace`, in text
//! and in JSON, taken through every path a credential travels (the
//! upgrade's header and query, an `auth` message good and bad, a refresh,
//! REST with a bearer token good, bad and expired, the API key in the
//! query), and then its whole output searched for each token, each
//! token's signature, and the query values.

mod common;

use common::tokens::*;
use common::*;
use serde_json::json;

/// Every credential the run used, and the parts of each that must not
/// appear either (a JWT's signature is its last segment).
fn secrets(tokens: &[String], others: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = others.iter().map(|s| s.to_string()).collect();
    for token in tokens {
        all.push(token.clone());
        let signature = token.rsplit('.').next().unwrap_or_default();
        if signature.len() >= 8 {
            all.push(signature.to_string());
        }
    }
    all
}

#[test]
fn no_token_key_or_signature_reaches_the_log_at_trace() {
    for format in ["text", "json"] {
        let api_key = "query-api-key-do-not-log";
        let process = BrokerProcess::spawn(&[
            ("LOG_LEVEL", "trace"),
            ("LOG_FORMAT", format),
            ("TOKEN_HMAC_SECRET", SECRET),
            ("API_KEY", api_key),
        ]);
        let addr = process.addr;
        create_topic_with_key(addr, api_key, "news");
        let good = hs256(&claims("user-1", &["*"], &["*"]));
        let fresh = hs256(&claims("user-1", &["news"], &["news"]));
        let forged = hs256_with(&claims("user-1", &["*"], &["*"]), "wrong-secret");
        let mut expired_claims = claims("user-1", &["*"], &[]);
        expired_claims["exp"] = json!(epoch_secs(-3600));
        let expired = hs256(&expired_claims);

        let url = ws_url(addr);
        let mut by_header =
            connect_with(&url, &[("Authorization", &format!("Bearer {good}"))]).unwrap();
        by_header.subscribe("news", 0);
        let mut by_query = connect_with(&format!("{url}?token={good}"), &[]).unwrap();
        by_query.publish("news", "m1", json!(1));
        assert_eq!(
            connect_with(&format!("{url}?token={forged}"), &[]).err(),
            Some(401)
        );
        assert_eq!(
            connect_with(&format!("{url}?token={expired}"), &[]).err(),
            Some(401)
        );
        let mut by_key = connect_with(&format!("{url}?api_key={api_key}"), &[]).unwrap();
        by_key.ping("key");
        let mut by_message = connect_with(&url, &[]).unwrap();
        by_message.send(json!({"type":"auth","token":forged}));
        by_message.expect("error");
        by_message.send(json!({"type":"auth","token":expired}));
        by_message.expect("error");
        by_message.send(json!({"type":"auth","token":good}));
        by_message.expect("ack");
        by_message.send(json!({"type":"auth","token":fresh}));
        by_message.expect("ack");
        for token in [&good, &forged, &expired] {
            http(
                addr,
                "GET",
                "/topics",
                None,
                &[("Authorization", &format!("Bearer {token}"))],
            );
        }
        http(
            addr,
            "GET",
            &format!("/topics?api_key={api_key}"),
            None,
            &[],
        );
        drop((by_header, by_query, by_key, by_message));
        let log = process.stop();

        assert!(log.contains("user-1"), "the sub is logged: {log}");
        let names_sub = match format {
            "text" => "sub=user-1",
            _ => r#""sub":"user-1""#,
        };
        assert!(
            log.lines().any(|line| line.contains("request")
                && line.contains("/topics")
                && line.contains(names_sub)),
            "{format}: the REST request line names the token's sub:\n{log}"
        );
        for secret in secrets(&[good, fresh, forged, expired], &[api_key, SECRET]) {
            assert!(
                !log.contains(&secret),
                "{format}: the log holds {secret}:\n{log}"
            );
        }
    }
}

fn create_topic_with_key(addr: std::net::SocketAddr, key: &str, name: &str) {
    let (status, body) = http_json(
        addr,
        "POST",
        "/topics",
        Some(&json!({ "name": name }).to_string()),
        &[("X-API-Key", key)],
    );
    assert_eq!(status, 201, "{body}");
}
