//! Unit tests of the settings (`super`).

use super::*;
use std::collections::HashMap;

fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_vars(|name| map.get(name).cloned())
}

#[test]
fn defaults_match_the_contract() {
    let c = with(&[]).unwrap();
    assert_eq!(c.addr, "[::]:8080".parse().unwrap());
    assert_eq!(c.api_key, None);
    assert_eq!(c.subscriber_queue_size, 100);
    assert_eq!(c.ring_buffer_size, 100);
    assert!(c.workers >= 1);
    assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(c.max_message_bytes, 1_048_576);
    assert_eq!(c.max_connections, 100_000);
    assert_eq!(c.log_level, log::LevelFilter::Info);
    assert!(c.tokens.is_none());
    assert_eq!((c.publish_rate, c.publish_burst), (0, 0));
    assert!(c.allowed_origins.is_empty());
}

#[test]
fn addresses_parse() {
    assert_eq!(
        with(&[("ADDR", ":9000")]).unwrap().addr,
        "[::]:9000".parse().unwrap()
    );
    assert_eq!(
        with(&[("ADDR", "127.0.0.1:0")]).unwrap().addr,
        "127.0.0.1:0".parse().unwrap()
    );
    assert_eq!(
        with(&[("ADDR", "[::1]:81")]).unwrap().addr,
        "[::1]:81".parse().unwrap()
    );
    assert_eq!(with(&[("ADDR", "localhost:0")]).unwrap().addr.port(), 0);
    for bad in ["8080", "127.0.0.1:99999", ":x", "no port"] {
        let err = with(&[("ADDR", bad)]).unwrap_err();
        assert_eq!(err.variable, "ADDR", "{bad}");
    }
}

#[test]
fn bad_values_name_the_variable() {
    for (name, value) in [
        ("SUBSCRIBER_QUEUE_SIZE", "0"),
        ("SUBSCRIBER_QUEUE_SIZE", "ten"),
        ("RING_BUFFER_SIZE", "0"),
        ("RING_BUFFER_SIZE", "-1"),
        ("WORKERS", "0"),
        ("HEARTBEAT_INTERVAL_SECS", "0"),
        ("SHUTDOWN_TIMEOUT_SECS", "1.5"),
        ("MAX_MESSAGE_BYTES", "1"),
        ("MAX_CONNECTIONS", "0"),
        ("HANDSHAKE_TIMEOUT_SECS", "0"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("TOKEN_LEEWAY_SECS", "-1"),
        ("PUBLISH_RATE", "1000001"),
        ("PUBLISH_BURST", "x"),
        ("ALLOWED_ORIGINS", "app.example"),
    ] {
        let err = with(&[(name, value)]).unwrap_err();
        assert_eq!(err.variable, name);
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn empty_values_take_the_default_and_empty_key_disables_auth() {
    let c = with(&[
        ("API_KEY", ""),
        ("WORKERS", ""),
        ("RING_BUFFER_SIZE", "  "),
        ("LOG_LEVEL", "DEBUG"),
    ])
    .unwrap();
    assert_eq!(c.api_key, None);
    assert!(c.workers >= 1);
    assert_eq!(c.ring_buffer_size, 100);
    assert_eq!(c.log_level, log::LevelFilter::Debug);
    assert_eq!(
        with(&[("API_KEY", " ")]).unwrap().api_key.as_deref(),
        Some(" "),
        "a key is taken verbatim: spaces do not turn authentication off"
    );
    assert_eq!(
        with(&[("API_KEY", "s3cret")]).unwrap().api_key.as_deref(),
        Some("s3cret")
    );
}

#[test]
fn the_settings_table_lists_exactly_the_variables_read() {
    let read = std::cell::RefCell::new(Vec::new());
    Config::from_vars(|name| {
        read.borrow_mut().push(name.to_string());
        None
    })
    .unwrap();
    let mut read = read.into_inner();
    read.sort();
    read.dedup();
    let mut listed: Vec<String> = SETTINGS.iter().map(|s| s.name().to_string()).collect();
    listed.sort();
    assert_eq!(read, listed);
}

#[test]
fn settings_table_names_every_variable_once() {
    let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), SETTINGS.len());
}

#[test]
fn every_choice_is_named_in_its_meaning() {
    for (name, meaning, words) in [
        (
            LOG_LEVEL.name,
            LOG_LEVEL.meaning,
            LOG_LEVELS.iter().map(|c| c.0).collect::<Vec<_>>(),
        ),
        (
            LOG_FORMAT.name,
            LOG_FORMAT.meaning,
            LOG_FORMATS.iter().map(|c| c.0).collect(),
        ),
    ] {
        for word in words {
            assert!(meaning.contains(&format!("`{word}`")), "{name}: {word}");
        }
    }
}

#[test]
fn the_start_up_log_shows_every_setting_but_not_the_key() {
    let c = with(&[
        ("API_KEY", "s3cret"),
        ("HEARTBEAT_INTERVAL_SECS", "7"),
        ("LOG_FORMAT", "JSON"),
    ])
    .unwrap();
    let shown = c.shown();
    let names: Vec<&str> = shown.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, SETTINGS.iter().map(|s| s.name()).collect::<Vec<_>>());
    let value = |name: &str| shown.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(value("API_KEY"), "set");
    assert_eq!(value("HEARTBEAT_INTERVAL_SECS"), "7");
    assert_eq!(value("LOG_FORMAT"), "json");
    assert_eq!(value("ADDR"), "[::]:8080");
    assert!(!shown.iter().any(|(_, v)| v.contains("s3cret")));
}

/// The rows `| `NAME` | default | meaning |` of the table under `heading`.
fn table_rows(markdown: &str, heading: &str) -> Vec<(String, String, String)> {
    let section = markdown
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} section"))
        .1;
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and the separator
        .flat_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 5, "{line}");
            // The contract marks its extensions: `NAME` **ext**; a row may
            // name several settings, `A`, `B`, with one default for all or
            // one each: `0`, the rate.
            let names: Vec<&str> = cells[1]
                .trim_end_matches("**ext**")
                .trim()
                .split(", ")
                .collect();
            let defaults: Vec<&str> = match cells[2].split(", ").collect::<Vec<_>>() {
                each if each.len() == names.len() => each,
                _ => vec![cells[2]; names.len()],
            };
            let meaning = cells[3].to_string();
            names.into_iter().zip(defaults).map(move |(name, default)| {
                let default = match default {
                    "empty" => String::new(),
                    text => text.trim_matches('`').to_string(),
                };
                (name.trim_matches('`').to_string(), default, meaning.clone())
            })
        })
        .collect()
}

#[test]
fn the_readme_documents_every_setting_as_the_table_does() {
    let rows = table_rows(include_str!("../../README.md"), "## Configuration");
    let table: Vec<(String, String, String)> = SETTINGS
        .iter()
        .map(|s| {
            (
                s.name().to_string(),
                s.default_text().to_string(),
                s.meaning(),
            )
        })
        .collect();
    assert_eq!(rows, table, "README.md's configuration table");
}

#[test]
fn the_protocol_copy_gives_the_same_defaults() {
    let rows = table_rows(
        include_str!("../../docs/PROTOCOL.md"),
        "## Configuration (environment)",
    );
    assert!(rows.len() >= 10, "{rows:?}");
    for (name, default, _) in rows {
        let setting = SETTINGS
            .iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| {
                panic!("docs/PROTOCOL.md names {name}, which the broker does not read")
            });
        assert_eq!(default, setting.default_text(), "{name}");
    }
}

#[test]
fn redis_urls_may_ask_for_tls_and_are_logged_without_their_password() {
    for url in ["redis://127.0.0.1:6379", "rediss://redis.example:6380/2"] {
        assert_eq!(
            with(&[("REDIS_URL", url)]).unwrap().redis_url.as_deref(),
            Some(url)
        );
    }
    let err = with(&[("REDIS_URL", "http://127.0.0.1:6379")]).unwrap_err();
    assert_eq!(err.variable, "REDIS_URL");
    let err = with(&[("REDIS_URL", "http://admin:secret@127.0.0.1:6379")]).unwrap_err();
    assert_eq!(err.value, "http://admin:***@127.0.0.1:6379");
    assert!(!err.to_string().contains("secret"), "{err}");
    let shown = |url: &str| with(&[("REDIS_URL", url)]).unwrap().redis_url_shown();
    assert_eq!(
        shown("redis://victim:secret@127.0.0.1:6379/0"),
        "redis://victim:***@127.0.0.1:6379/0"
    );
    assert_eq!(shown("rediss://:secret@h:1"), "rediss://:***@h:1");
    assert_eq!(shown("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(with(&[]).unwrap().redis_url_shown(), "");
    assert_eq!(
        shown("redis+sentinel://:secret@h1:26379,h2:26379/mymaster"),
        "redis+sentinel://:***@h1:26379,h2:26379/mymaster"
    );
    let err = with(&[("REDIS_URL", "redis+sentinel://:secret@h1:26379")]).unwrap_err();
    assert!(err.reason.contains("/MASTER"), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = with(&[
        ("REDIS_URL", "redis+sentinel://h:1/m"),
        ("REDIS_REPLICAS_ACK", "65"),
    ]);
    assert_eq!(err.unwrap_err().variable, "REDIS_REPLICAS_ACK");
}

#[test]
fn tls_files_must_hold_what_they_name_and_go_with_a_rediss_url() {
    let dir = std::env::temp_dir().join(format!("pubsub-tls-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let cert = write("cert.pem", &certified.cert.pem());
    let key = write("key.pem", &certified.signing_key.serialize_pem());
    let not_pem = write("not.pem", "hello");
    let (cert, key) = (cert.as_str(), key.as_str());
    let tls = ("REDIS_URL", "rediss://127.0.0.1:6380");

    let config = with(&[tls, ("REDIS_CA_FILE", cert)]).unwrap();
    assert_eq!(
        config.redis_ca.as_ref().map(|c| c.path.as_str()),
        Some(cert)
    );
    assert!(matches!(config.redis_client(), Some(Ok(_))));
    let config = with(&[
        tls,
        ("REDIS_CA_FILE", cert),
        ("REDIS_CLIENT_CERT_FILE", cert),
        ("REDIS_CLIENT_KEY_FILE", key),
    ])
    .unwrap();
    assert!(matches!(config.redis_client(), Some(Ok(_))));
    assert!(
        !format!("{config:?}").contains("PRIVATE KEY"),
        "a key is never shown"
    );

    let plain = ("REDIS_URL", "redis://127.0.0.1:6379");
    for (vars, variable, why) in [
        (
            vec![("REDIS_CA_FILE", cert)],
            "REDIS_CA_FILE",
            "only for a rediss:// REDIS_URL",
        ),
        (
            vec![plain, ("REDIS_CA_FILE", cert)],
            "REDIS_CA_FILE",
            "only for a rediss://",
        ),
        (
            vec![
                plain,
                ("REDIS_CLIENT_CERT_FILE", cert),
                ("REDIS_CLIENT_KEY_FILE", key),
            ],
            "REDIS_CLIENT_CERT_FILE",
            "only for a rediss://",
        ),
        (
            vec![tls, ("REDIS_CA_FILE", "/nonexistent/ca.pem")],
            "REDIS_CA_FILE",
            "cannot read it",
        ),
        (
            vec![tls, ("REDIS_CA_FILE", &not_pem)],
            "REDIS_CA_FILE",
            "holds no PEM certificate",
        ),
        (
            vec![tls, ("REDIS_CA_FILE", key)],
            "REDIS_CA_FILE",
            "holds no PEM certificate",
        ),
        (
            vec![tls, ("REDIS_CLIENT_CERT_FILE", cert)],
            "REDIS_CLIENT_CERT_FILE",
            "needs REDIS_CLIENT_KEY_FILE",
        ),
        (
            vec![tls, ("REDIS_CLIENT_KEY_FILE", key)],
            "REDIS_CLIENT_KEY_FILE",
            "needs REDIS_CLIENT_CERT_FILE",
        ),
        (
            vec![
                tls,
                ("REDIS_CLIENT_CERT_FILE", cert),
                ("REDIS_CLIENT_KEY_FILE", cert),
            ],
            "REDIS_CLIENT_KEY_FILE",
            "holds no PEM private key",
        ),
    ] {
        let err = with(&vars).unwrap_err();
        assert_eq!(err.variable, variable, "{vars:?}");
        assert!(err.reason.contains(why), "{vars:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

const HMAC_SECRET: &str = "a secret of 32 bytes, or longer.";

/// The value of `name` in the start-up log of `config`.
fn shown(config: &Config, name: &str) -> String {
    let shown = config.shown();
    shown.into_iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn token_settings_make_one_verifier_and_show_no_secret() {
    let dir = std::env::temp_dir().join(format!("pubsub-token-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let keys = dir.join("keys.pem");
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let file = format!(
        "# kid: main\n{}{}",
        pair.public_key_pem(),
        p256.public_key_pem()
    );
    std::fs::write(&keys, file).unwrap();
    let config = with(&[
        ("TOKEN_HMAC_SECRET", HMAC_SECRET),
        ("TOKEN_PUBLIC_KEYS_FILE", keys.to_str().unwrap()),
        ("TOKEN_AUDIENCE", " pubsub "),
        ("TOKEN_ISSUER", "https://auth.example"),
        ("TOKEN_LEEWAY_SECS", "10"),
    ])
    .unwrap();
    let tokens = config.tokens.as_ref().expect("tokens on");
    assert!(tokens.has_hmac_secret());
    assert_eq!(tokens.audience(), Some("pubsub"));
    assert_eq!(tokens.issuer(), Some("https://auth.example"));
    assert_eq!(tokens.leeway(), Duration::from_secs(10));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let claims =
        serde_json::json!({"sub": "u", "exp": exp, "aud": "pubsub", "iss": "https://auth.example"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("main".into());
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(tokens.verify(&token).unwrap().sub, "u");

    assert_eq!(shown(&config, "TOKEN_HMAC_SECRET"), "set");
    assert_eq!(
        shown(&config, "TOKEN_PUBLIC_KEYS_FILE"),
        "main (Ed25519), 1 (P-256)"
    );
    assert_eq!(shown(&config, "TOKEN_AUDIENCE"), "pubsub");
    assert_eq!(shown(&config, "TOKEN_LEEWAY_SECS"), "10");
    assert!(!config.shown().iter().any(|(_, v)| v.contains(HMAC_SECRET)));

    let only_keys = with(&[("TOKEN_PUBLIC_KEYS_FILE", keys.to_str().unwrap())]).unwrap();
    let tokens = only_keys.tokens.as_ref().unwrap();
    assert!(!tokens.has_hmac_secret());
    assert_eq!(tokens.leeway(), Duration::from_secs(5), "the default");
    assert_eq!(shown(&only_keys, "TOKEN_HMAC_SECRET"), "unset");
    assert_eq!(shown(&with(&[]).unwrap(), "TOKEN_LEEWAY_SECS"), "");
    let only_secret = with(&[("TOKEN_HMAC_SECRET", HMAC_SECRET)]).unwrap();
    assert_eq!(only_secret.tokens.as_ref().unwrap().public_keys().len(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn token_settings_that_cannot_work_stop_the_broker() {
    let dir = std::env::temp_dir().join(format!("pubsub-bad-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let empty = write("empty.pem", "");
    let garbage = write("garbage.pem", "not a key\n");
    let private = write("private.pem", &ed.serialize_pem());
    let p384 = write("p384.pem", &p384.public_key_pem());
    let keys = "TOKEN_PUBLIC_KEYS_FILE";
    for (vars, variable, why) in [
        (
            vec![(keys, "/nonexistent/keys.pem")],
            keys,
            "cannot read it",
        ),
        (
            vec![(keys, empty.as_str())],
            keys,
            "holds no PEM public key",
        ),
        (
            vec![(keys, garbage.as_str())],
            keys,
            "holds no PEM public key",
        ),
        (vec![(keys, private.as_str())], keys, "key 0: a private key"),
        (vec![(keys, p384.as_str())], keys, "P-384"),
        (
            vec![("TOKEN_AUDIENCE", "pubsub")],
            "TOKEN_AUDIENCE",
            "needs TOKEN_HMAC_SECRET or TOKEN_PUBLIC_KEYS_FILE",
        ),
        (
            vec![("TOKEN_ISSUER", "me")],
            "TOKEN_ISSUER",
            "needs TOKEN_HMAC_SECRET",
        ),
        (
            vec![("TOKEN_LEEWAY_SECS", "5")],
            "TOKEN_LEEWAY_SECS",
            "needs TOKEN_HMAC_SECRET",
        ),
    ] {
        let err = with(&vars).unwrap_err();
        assert_eq!(err.variable, variable, "{vars:?}");
        assert!(err.reason.contains(why), "{vars:?}: {err}");
    }
    let short = "31 bytes, one short of the 32..";
    assert_eq!(short.len(), 31);
    let err = with(&[("TOKEN_HMAC_SECRET", short)]).unwrap_err();
    assert_eq!(err.variable, "TOKEN_HMAC_SECRET");
    assert!(err.reason.contains("shorter than 32 bytes"), "{err}");
    assert!(!err.to_string().contains(short), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_publish_limit_and_the_origins_parse() {
    let limit = |vars: &[(&str, &str)]| {
        let c = with(vars).unwrap();
        (c.publish_rate, c.publish_burst)
    };
    assert_eq!(
        limit(&[("PUBLISH_RATE", "10")]),
        (10, 10),
        "burst: the rate"
    );
    assert_eq!(
        limit(&[("PUBLISH_RATE", "10"), ("PUBLISH_BURST", "0")]),
        (10, 10)
    );
    assert_eq!(
        limit(&[("PUBLISH_RATE", "10"), ("PUBLISH_BURST", "50")]),
        (10, 50)
    );
    assert_eq!(
        limit(&[("PUBLISH_RATE", "10"), ("PUBLISH_BURST", "1")]),
        (10, 1)
    );
    let err = with(&[("PUBLISH_BURST", "5")]).unwrap_err();
    assert_eq!(err.variable, "PUBLISH_BURST");
    assert!(err.reason.contains("needs a PUBLISH_RATE"), "{err}");

    let c = with(&[(
        "ALLOWED_ORIGINS",
        " https://app.example , http://localhost:3000,,",
    )])
    .unwrap();
    assert_eq!(
        c.allowed_origins,
        ["https://app.example", "http://localhost:3000"]
    );
    assert_eq!(
        shown(&c, "ALLOWED_ORIGINS"),
        "https://app.example,http://localhost:3000"
    );
    for bad in [
        "https://app.example/",
        "app.example",
        "*",
        "://x",
        "https://",
    ] {
        let err = with(&[("ALLOWED_ORIGINS", bad)]).unwrap_err();
        assert_eq!(err.variable, "ALLOWED_ORIGINS", "{bad}");
        assert!(err.reason.contains("is not an origin"), "{bad}: {err}");
    }
}

#[test]
fn a_config_printed_whole_shows_no_secret() {
    let config = with(&[
        ("API_KEY", "the-api-key"),
        ("TOKEN_HMAC_SECRET", HMAC_SECRET),
        ("REDIS_URL", "redis://admin:redis-password@127.0.0.1:6379"),
    ])
    .unwrap();
    let printed = format!("{config:?}");
    for secret in ["the-api-key", HMAC_SECRET, "redis-password"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    assert!(printed.contains("api_key: Some(***)"), "{printed}");
    assert_eq!(config.api_key.as_deref(), Some("the-api-key"));
}
