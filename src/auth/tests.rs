//! Unit tests of token checking and of the key file (`super`), from the
//! attacker's side: every token here that should not pass is refused, with
//! the right reason and a message that quotes nothing of it.

use super::*;
use crate::metrics::AuthFailure;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"a test secret of at least 32 bytes";
const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/rsa-2048-private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/rsa-2048-public.pem");
const RSA_PUBLIC_PKCS1: &str = include_str!("../../tests/fixtures/rsa-2048-public-pkcs1.pem");
const RSA_1024_PUBLIC: &str = include_str!("../../tests/fixtures/rsa-1024-public.pem");
const LEEWAY: Duration = Duration::from_secs(5);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A key to sign with, and its public key's PEM.
struct Signer {
    algorithm: Algorithm,
    key: EncodingKey,
    public_pem: String,
}

impl Signer {
    fn hmac(secret: &[u8]) -> Signer {
        Signer {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret),
            public_pem: String::new(),
        }
    }

    fn ed25519() -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Signer {
            algorithm: Algorithm::EdDSA,
            key: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
            public_pem: pair.public_key_pem(),
        }
    }

    fn p256() -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Signer {
            algorithm: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            public_pem: pair.public_key_pem(),
        }
    }

    fn rsa() -> Signer {
        Signer {
            algorithm: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            public_pem: RSA_PUBLIC.to_string(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(None, claims)
    }

    fn sign_with_kid(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = kid.map(str::to_string);
        encode(&header, claims, &self.key).unwrap()
    }
}

fn settings<'a>(secret: Option<&'a [u8]>, pem: &str) -> TokenSettings<'a> {
    TokenSettings {
        hmac_secret: secret,
        public_keys: match pem {
            "" => Vec::new(),
            pem => parse_public_keys(pem).unwrap(),
        },
        audience: None,
        issuer: None,
        leeway: LEEWAY,
    }
}

fn verifier(secret: Option<&[u8]>, pem: &str) -> TokenVerifier {
    TokenVerifier::new(settings(secret, pem))
}

/// Valid claims: `user-42`, ten minutes, reading `news.*`, writing `chat`.
fn claims() -> Value {
    json!({
        "sub": "user-42",
        "exp": now() + 600,
        "topics": {"subscribe": ["news.*"], "publish": ["chat"]},
    })
}

fn with(changes: Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            value => claims
                .as_object_mut()
                .unwrap()
                .insert(name.clone(), value.clone()),
        };
    }
    claims
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

#[track_caller]
fn refused(verifier: &TokenVerifier, token: &str) -> Refusal {
    let refusal = verifier.verify(token).expect_err("refused");
    let message = refusal.to_string();
    for part in token.split('.').filter(|part| part.len() >= 4) {
        assert!(!message.contains(part), "{message} quotes the token");
    }
    assert!(!message.contains("user-42"), "{message}");
    refusal
}

#[track_caller]
fn invalid(verifier: &TokenVerifier, token: &str, why: &str) {
    match refused(verifier, token) {
        Refusal::Invalid(said) => assert!(said.contains(why), "{said:?}, not {why:?}"),
        Refusal::Expired => panic!("expired, not invalid ({why})"),
    }
}

#[test]
fn a_token_of_each_algorithm_is_accepted_with_its_key() {
    let exp = now() + 600;
    for signer in [
        Signer::hmac(SECRET),
        Signer::ed25519(),
        Signer::rsa(),
        Signer::p256(),
    ] {
        let verifier = match signer.algorithm {
            Algorithm::HS256 => verifier(Some(SECRET), ""),
            _ => verifier(None, &signer.public_pem),
        };
        let grant = verifier
            .verify(&signer.sign(&with(json!({"exp": exp}))))
            .unwrap_or_else(|e| panic!("{:?}: {e}", signer.algorithm));
        assert_eq!(grant.sub, "user-42");
        assert_eq!(grant.expires, UNIX_EPOCH + Duration::from_secs(exp));
        assert!(grant.rights.may_subscribe("news.today"));
        assert!(!grant.rights.may_publish("news.today"));
        assert!(grant.rights.may_publish("chat"));
        assert!(!grant.rights.may_subscribe("chat"));
        assert!(!grant.rights.is_admin());
        assert_eq!(verifier.leeway(), LEEWAY);
    }
}

#[test]
fn admin_grants_everything_and_no_topics_grant_nothing() {
    let signer = Signer::hmac(SECRET);
    let verifier = verifier(Some(SECRET), "");
    let admin = verifier
        .verify(&signer.sign(&with(json!({"admin": true, "topics": null}))))
        .unwrap();
    assert_eq!(admin.rights, Rights::all());
    let nothing = verifier
        .verify(&signer.sign(&with(json!({"admin": false, "topics": null}))))
        .unwrap();
    assert!(!nothing.rights.is_admin());
    assert!(!nothing.rights.may_see("news.today"));
    let empty_lists = verifier
        .verify(&signer.sign(&with(json!({"topics": {"subscribe": [], "publish": []}}))))
        .unwrap();
    assert!(!empty_lists.rights.may_see("chat"));
    let optional_claims = with(json!({
        "iat": now(), "nbf": now() - 10, "jti": "j1", "iss": "anyone", "aud": ["a", "b"],
        "exp": now() as f64 + 600.4,
    }));
    assert!(verifier.verify(&signer.sign(&optional_claims)).is_ok());
}

#[test]
fn a_forged_or_tampered_token_is_refused() {
    let hmac = verifier(Some(SECRET), "");
    let token = Signer::hmac(SECRET).sign(&claims());
    let (message, signature) = token.rsplit_once('.').unwrap();
    let (header, _) = message.split_once('.').unwrap();
    let more_rights = b64(with(json!({"admin": true})).to_string().as_bytes());
    invalid(
        &hmac,
        &format!("{header}.{more_rights}.{signature}"),
        "bad signature",
    );
    let flipped = match signature.as_bytes()[0] {
        b'A' => format!("B{}", &signature[1..]),
        _ => format!("A{}", &signature[1..]),
    };
    invalid(&hmac, &format!("{message}.{flipped}"), "bad signature");
    invalid(&hmac, &format!("{message}."), "bad signature");

    let other_secret = Signer::hmac(b"another secret of at least 32 bytes");
    invalid(&hmac, &other_secret.sign(&claims()), "bad signature");
    let (ours, theirs) = (Signer::ed25519(), Signer::ed25519());
    let ed = verifier(None, &ours.public_pem);
    invalid(&ed, &theirs.sign(&claims()), "bad signature");
    let (ours, theirs) = (Signer::p256(), Signer::p256());
    invalid(
        &verifier(None, &ours.public_pem),
        &theirs.sign(&claims()),
        "bad signature",
    );
}

#[test]
fn alg_none_is_refused_by_every_verifier() {
    let payload = b64(claims().to_string().as_bytes());
    let ed = Signer::ed25519();
    for verifier in [
        verifier(Some(SECRET), ""),
        verifier(None, &ed.public_pem),
        verifier(Some(SECRET), &format!("{}{RSA_PUBLIC}", ed.public_pem)),
    ] {
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let header = b64(header.as_bytes());
            invalid(&verifier, &format!("{header}.{payload}."), "accepted `alg`");
            invalid(
                &verifier,
                &format!("{header}.{payload}.c2ln"),
                "accepted `alg`",
            );
        }
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    // The public key's PEM text as an HMAC secret: a verifier that took
    // the token's `alg` at its word would check it with that text.
    for public in [Signer::rsa(), Signer::ed25519(), Signer::p256()] {
        let forged = Signer::hmac(public.public_pem.as_bytes()).sign(&claims());
        invalid(
            &verifier(None, &public.public_pem),
            &forged,
            "no configured key has the token's `alg`",
        );
        invalid(
            &verifier(Some(SECRET), &public.public_pem),
            &forged,
            "bad signature",
        );
    }
    let hmac_only = verifier(Some(SECRET), "");
    for signer in [Signer::rsa(), Signer::ed25519(), Signer::p256()] {
        invalid(
            &hmac_only,
            &signer.sign(&claims()),
            "no configured key has the token's `alg`",
        );
    }
    // An RS256 token against an Ed25519 key, and other HMAC widths.
    let ed = Signer::ed25519();
    invalid(
        &verifier(None, &ed.public_pem),
        &Signer::rsa().sign(&claims()),
        "no configured key",
    );
    let mut hs512 = Signer::hmac(SECRET);
    hs512.algorithm = Algorithm::HS512;
    invalid(&hmac_only, &hs512.sign(&claims()), "no configured key");
}

#[test]
fn expiry_and_not_before_allow_the_leeway_and_no_more() {
    let signer = Signer::hmac(SECRET);
    let verifier = verifier(Some(SECRET), "");
    let long_expired = signer.sign(&with(json!({"exp": now() - 60})));
    assert_eq!(refused(&verifier, &long_expired), Refusal::Expired);
    assert_eq!(Refusal::Expired.failure(), AuthFailure::Expired);
    assert_eq!(Refusal::Expired.to_string(), "token expired");
    let just_expired = signer.sign(&with(json!({"exp": now() - 2})));
    assert!(verifier.verify(&just_expired).is_ok(), "within the leeway");

    let not_yet = signer.sign(&with(json!({"nbf": now() + 60})));
    invalid(&verifier, &not_yet, "not valid yet");
    assert_eq!(refused(&verifier, &not_yet).failure(), AuthFailure::Invalid);
    let almost = signer.sign(&with(json!({"nbf": now() + 2})));
    assert!(verifier.verify(&almost).is_ok(), "within the leeway");

    let forged_expired =
        Signer::hmac(b"not our secret, but 32 bytes long").sign(&with(json!({"exp": now() - 60})));
    invalid(&verifier, &forged_expired, "bad signature");
}

#[test]
fn audience_and_issuer_must_match_when_set() {
    let signer = Signer::hmac(SECRET);
    let verifier = TokenVerifier::new(TokenSettings {
        audience: Some("pubsub".into()),
        issuer: Some("https://auth.example".into()),
        ..settings(Some(SECRET), "")
    });
    let good = json!({"aud": "pubsub", "iss": "https://auth.example"});
    assert!(verifier.verify(&signer.sign(&with(good.clone()))).is_ok());
    let in_a_list = json!({"aud": ["other", "pubsub"], "iss": "https://auth.example"});
    assert!(verifier.verify(&signer.sign(&with(in_a_list))).is_ok());
    for (changes, why) in [
        (json!({"aud": "other"}), "audience"),
        (json!({"aud": ["other", "more"]}), "audience"),
        (json!({"aud": null}), "`aud` is missing"),
        (json!({"aud": 7}), "`aud` is missing"),
        (json!({"iss": "https://evil.example"}), "issuer"),
        (json!({"iss": null}), "`iss` is missing"),
    ] {
        let mut claims = with(good.clone());
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                value => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(name.clone(), value.clone()),
            };
        }
        invalid(&verifier, &signer.sign(&claims), why);
    }
}

#[test]
fn claims_that_break_the_contract_are_refused() {
    let signer = Signer::hmac(SECRET);
    let verifier = verifier(Some(SECRET), "");
    let long_sub = "x".repeat(256);
    for (changes, why) in [
        (json!({"exp": null}), "`exp` is missing"),
        (json!({"exp": "tomorrow"}), "`exp` is missing"),
        (json!({"exp": u64::MAX}), "before the year 10000"),
        (json!({"sub": null}), "`sub` must be"),
        (json!({"sub": ""}), "`sub` must be"),
        (json!({"sub": long_sub}), "`sub` must be"),
        (json!({"sub": 42}), "`sub` must be"),
        (json!({"nbf": "soon"}), "NumericDates"),
        (json!({"iat": [1]}), "NumericDates"),
        (json!({"jti": 5}), "must be strings"),
        (json!({"iss": {"x": 1}}), "must be strings"),
        (json!({"aud": [1]}), "`aud` must be"),
        (json!({"admin": "yes"}), "`admin` must be"),
        (json!({"topics": ["news.*"]}), "`topics` must be"),
        (json!({"topics": "news.*"}), "`topics` must be"),
        (
            json!({"topics": {"subscribe": "news.*"}}),
            "`topics` must be",
        ),
        (json!({"topics": {"subscribe": [1]}}), "`topics` must be"),
        (json!({"topics": {"subscribe": [null]}}), "`topics` must be"),
        (json!({"topics": {"read": ["news.*"]}}), "`topics` must be"),
        (
            json!({"admin": true, "topics": {"publish": {}}}),
            "`topics` must be",
        ),
    ] {
        invalid(&verifier, &signer.sign(&with(changes)), why);
    }
    let sub_255 = "é".repeat(127) + "x";
    assert_eq!(sub_255.len(), 255);
    let grant = verifier
        .verify(&signer.sign(&with(json!({"sub": sub_255}))))
        .unwrap();
    assert_eq!(grant.sub.len(), 255);
}

#[test]
fn malformed_tokens_are_refused() {
    let verifier = verifier(Some(SECRET), "");
    let token = Signer::hmac(SECRET).sign(&claims());
    let (header, _) = token.split_once('.').unwrap();
    // Signed with the secret, so that only their claims are wrong.
    let signed = |payload: &[u8]| {
        let message = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(payload));
        let key = EncodingKey::from_secret(SECRET);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256);
        format!("{message}.{}", signature.unwrap())
    };
    for bad in [
        "".to_string(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.###.$$$".into(),
        format!(" {token}"),
        format!("{token}.{token}"),
        signed(b"[1,2]"),
        signed(b"{not json"),
        signed(b"\xff\xfe"),
        format!("{header}.%%%.x"),
    ] {
        let refusal = refused(&verifier, &bad);
        assert_eq!(refusal.failure(), AuthFailure::Invalid, "{bad}");
    }
}

#[test]
fn kid_names_a_key_by_its_name_or_its_position() {
    let (ed, ec, rsa) = (Signer::ed25519(), Signer::p256(), Signer::rsa());
    let file = format!(
        "# kid: main\n{}\n{}\n# kid: legacy\n\n{}",
        ed.public_pem, ec.public_pem, rsa.public_pem
    );
    let verifier = verifier(None, &file);
    let names: Vec<_> = verifier
        .public_keys()
        .map(|k| (k.name(), k.key_type()))
        .collect();
    assert_eq!(
        names,
        [
            (Some("main"), KeyType::Ed25519),
            (None, KeyType::EcP256),
            (Some("legacy"), KeyType::Rsa)
        ]
    );
    for (signer, kid) in [
        (&ed, "main"),
        (&ed, "0"),
        (&ec, "1"),
        (&rsa, "legacy"),
        (&rsa, "2"),
    ] {
        let token = signer.sign_with_kid(Some(kid), &claims());
        assert!(verifier.verify(&token).is_ok(), "kid {kid}");
    }
    for kid in ["nope", "3", "01", "+1", "-1", ""] {
        invalid(
            &verifier,
            &ed.sign_with_kid(Some(kid), &claims()),
            "unknown `kid`",
        );
    }
    invalid(
        &verifier,
        &ec.sign_with_kid(Some("main"), &claims()),
        "`alg` is not the algorithm of the key `kid` names",
    );
    for signer in [&ed, &ec, &rsa] {
        assert!(
            verifier.verify(&signer.sign(&claims())).is_ok(),
            "no kid: every key in turn"
        );
    }
}

#[test]
fn without_kid_each_key_is_tried_in_turn_the_secret_included() {
    let (first, second) = (Signer::ed25519(), Signer::ed25519());
    let file = format!("{}{}", first.public_pem, second.public_pem);
    let verifier = verifier(Some(SECRET), &file);
    assert!(verifier.verify(&second.sign(&claims())).is_ok());
    assert!(verifier.verify(&first.sign(&claims())).is_ok());
    assert!(verifier
        .verify(&Signer::hmac(SECRET).sign(&claims()))
        .is_ok());
    assert!(verifier
        .verify(&second.sign_with_kid(Some("1"), &claims()))
        .is_ok());
    invalid(
        &verifier,
        &second.sign_with_kid(Some("0"), &claims()),
        "bad signature",
    );
    invalid(
        &verifier,
        &Signer::ed25519().sign(&claims()),
        "bad signature",
    );
    let expired = second.sign(&with(json!({"exp": now() - 60})));
    assert_eq!(refused(&verifier, &expired), Refusal::Expired);
}

#[test]
fn with_one_public_key_kid_is_not_needed_to_match() {
    let ed = Signer::ed25519();
    let verifier = verifier(Some(SECRET), &ed.public_pem);
    assert!(verifier
        .verify(&ed.sign_with_kid(Some("whatever"), &claims()))
        .is_ok());
    assert!(verifier
        .verify(&Signer::hmac(SECRET).sign_with_kid(Some("hmac"), &claims()))
        .is_ok());
}

#[test]
fn debug_shows_no_secret() {
    let ed = Signer::ed25519();
    let verifier = TokenVerifier::new(TokenSettings {
        audience: Some("pubsub".into()),
        ..settings(Some(SECRET), &format!("# kid: main\n{}", ed.public_pem))
    });
    let shown = format!("{verifier:?}");
    assert!(!shown.contains("secret of at least"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", &SECRET[..8])), "{shown}");
    assert!(shown.contains("***") && shown.contains("main") && shown.contains("pubsub"));
    assert!(verifier.has_hmac_secret());
    assert_eq!(verifier.audience(), Some("pubsub"));
    assert_eq!(verifier.issuer(), None);
}

#[test]
fn the_key_file_holds_public_keys_we_accept_or_says_why_not() {
    let parsed = parse_public_keys(RSA_PUBLIC_PKCS1).unwrap();
    assert_eq!(parsed[0].key_type(), KeyType::Rsa);
    let rsa = verifier(None, RSA_PUBLIC_PKCS1);
    assert!(rsa.verify(&Signer::rsa().sign(&claims())).is_ok());

    let ed_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let ed_public = ed_pair.public_key_pem();
    let body = |pem: &str| pem.lines().nth(1).unwrap().to_string();
    for (text, why) in [
        (String::new(), "holds no PEM public key"),
        ("hello\nworld\n".into(), "holds no PEM public key"),
        ("# kid: lonely\n".into(), "names no key"),
        (RSA_PRIVATE.into(), "key 0: a private key"),
        (
            format!("{ed_public}# kid: mine\n{}", ed_pair.serialize_pem()),
            "key 1 (\"mine\"): a private key",
        ),
        (
            p384.public_key_pem(),
            "an EC key on P-384; ES256 needs P-256",
        ),
        (
            RSA_1024_PUBLIC.into(),
            "an RSA key of 1024 bits; RS256 needs 2048 to 8192",
        ),
        (certified.cert.pem(), "a CERTIFICATE, not a public key"),
        (
            format!("-----BEGIN PUBLIC KEY-----\n{}\n", body(&ed_public)),
            "no -----END line",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n".into(),
            "not valid PEM",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
            "not a well-formed public key",
        ),
        (
            format!("# kid: a\nsome text\n{ed_public}"),
            "just before its key",
        ),
        (format!("# kid:\n{ed_public}"), "with no name"),
        (
            format!("# kid: a\n# kid: b\n{ed_public}"),
            "follows another",
        ),
        (
            format!("# kid: a\n{ed_public}# kid: a\n{ed_public}"),
            "two keys are named \"a\"",
        ),
    ] {
        let err = parse_public_keys(&text).unwrap_err();
        assert!(err.contains(why), "{err:?}, not {why:?}");
        assert!(!err.contains(&body(RSA_PRIVATE)), "{err}");
    }
}
