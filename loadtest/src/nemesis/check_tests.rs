//! The checker's unit tests: histories fed by hand, one clean run and one
//! per kind of violation, each of which it must catch.

use super::*;
use crate::nemesis::history::Resume;

fn acked(topic: &str, id: &str, seq: u64) -> Publish {
    Publish {
        topic: topic.into(),
        id: id.into(),
        outcome: Outcome::Acked(seq),
    }
}

fn unknown(topic: &str, id: &str) -> Publish {
    Publish {
        topic: topic.into(),
        id: id.into(),
        outcome: Outcome::Unknown,
    }
}

fn first(epoch: &str, last_seq: u64) -> Entry {
    Entry::Subscribed {
        epoch: epoch.into(),
        last_seq,
        resume: None,
    }
}

fn resumed(since_seq: u64, sent: &str, epoch: &str, last_seq: u64, recovered: bool) -> Entry {
    Entry::Subscribed {
        epoch: epoch.into(),
        last_seq,
        resume: Some(Resume {
            since_seq,
            epoch: sent.into(),
            recovered,
        }),
    }
}

fn event(seq: u64, id: &str) -> Entry {
    Entry::Event { seq, id: id.into() }
}

fn sub(name: &str, entries: Vec<Entry>) -> Subscriber {
    Subscriber {
        name: name.into(),
        topic: "t".into(),
        entries,
    }
}

/// Three acked messages, seq 1 to 3.
fn three() -> Vec<Publish> {
    vec![acked("t", "a", 1), acked("t", "b", 2), acked("t", "c", 3)]
}

#[test]
fn a_clean_run_with_a_recovered_resume_passes() {
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            resumed(1, "E", "E", 2, true),
            event(2, "b"),
            event(3, "c"),
        ],
    );
    let v = check(&three(), &[s]);
    assert!(v.passed(), "{v:?}");
    assert_eq!((v.acked, v.delivered, v.expected_deliveries), (3, 3, 3));
    assert_eq!((v.resumes, v.recovered_true, v.lost), (1, 1, 0));
}

#[test]
fn an_unknown_outcome_may_be_delivered_or_not() {
    let mut publishes = three();
    publishes.push(unknown("t", "d"));
    publishes.push(unknown("t", "e"));
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            event(2, "b"),
            event(3, "c"),
            event(4, "e"),
        ],
    );
    let v = check(&publishes, &[s]);
    assert!(v.passed(), "{v:?}");
    assert_eq!(v.unknown_outcome, 2);
}

#[test]
fn a_gap_announced_by_a_resume_that_did_not_recover_is_accepted() {
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            resumed(1, "E", "E", 2, false),
            event(3, "c"),
        ],
    );
    let v = check(&three(), &[s]);
    assert!(v.passed(), "{v:?}");
    assert_eq!((v.recovered_false, v.announced_missed, v.lost), (1, 1, 0));
}

#[test]
fn a_topic_reset_announces_the_rest_of_the_old_epoch() {
    let publishes = vec![
        acked("t", "a", 1),
        acked("t", "b", 2),
        acked("t", "c", 1),
        acked("t", "d", 2),
    ];
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            Entry::Reset {
                epoch: "F".into(),
                last_seq: 1,
            },
            event(2, "d"),
        ],
    );
    let other = sub("s1", vec![first("E", 0), event(1, "a"), event(2, "b")]);
    let third = sub("s2", vec![first("F", 0), event(1, "c"), event(2, "d")]);
    let v = check(&publishes, &[s, other, third]);
    assert!(v.passed(), "{v:?}");
    assert_eq!(v.topic_resets, 1);
    assert_eq!(v.announced_missed, 2, "b in E and c in F: {v:?}");
}

#[test]
fn a_duplicate_is_caught() {
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            event(2, "b"),
            event(2, "b"),
            event(3, "c"),
        ],
    );
    let v = check(&three(), &[s]);
    assert_eq!((v.duplicates, v.violations), (1, 1), "{v:?}");
}

#[test]
fn a_message_repeated_under_another_seq_is_caught() {
    let s = sub(
        "s0",
        vec![first("E", 0), event(1, "a"), event(2, "b"), event(3, "a")],
    );
    let v = check(&three(), &[s]);
    assert!(v.duplicates >= 1 && !v.passed(), "{v:?}");
}

#[test]
fn a_reordering_is_caught() {
    let s = sub(
        "s0",
        vec![first("E", 0), event(1, "a"), event(3, "c"), event(2, "b")],
    );
    let v = check(&three(), &[s]);
    assert_eq!(v.reorderings, 1, "{v:?}");
    assert_eq!(v.unannounced_gaps, 1, "{v:?}");
    assert!(!v.passed());
}

#[test]
fn an_unannounced_gap_and_the_loss_it_hides_are_caught() {
    let s = sub("s0", vec![first("E", 0), event(1, "a"), event(3, "c")]);
    let v = check(&three(), &[s]);
    assert_eq!((v.unannounced_gaps, v.lost), (1, 1), "{v:?}");
    assert!(!v.passed());
}

#[test]
fn a_lost_acked_message_at_the_end_is_caught() {
    let s = sub("s0", vec![first("E", 0), event(1, "a"), event(2, "b")]);
    let v = check(&three(), &[s]);
    assert_eq!((v.lost, v.violations), (1, 1), "{v:?}");
}

#[test]
fn a_loss_across_a_resume_that_claimed_recovery_is_caught() {
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            resumed(1, "E", "E", 2, true),
            event(3, "c"),
        ],
    );
    let v = check(&three(), &[s]);
    assert_eq!((v.unannounced_gaps, v.lost), (1, 1), "{v:?}");
}

#[test]
fn a_recovered_resume_in_another_epoch_is_caught() {
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            event(2, "b"),
            event(3, "c"),
            resumed(3, "E", "F", 3, true),
        ],
    );
    let v = check(&three(), &[s]);
    assert_eq!(v.bad_resumes, 1, "{v:?}");
}

#[test]
fn a_message_nobody_published_is_caught() {
    let s = sub(
        "s0",
        vec![
            first("E", 0),
            event(1, "a"),
            event(2, "b"),
            event(3, "c"),
            event(4, "zz"),
        ],
    );
    let v = check(&three(), &[s]);
    assert_eq!(v.violations, 1, "{v:?}");
    assert!(v.described[0].contains("nobody published"), "{v:?}");
}

#[test]
fn a_message_under_another_seq_than_its_ack_is_caught() {
    let s = sub(
        "s0",
        vec![first("E", 0), event(1, "a"), event(2, "c"), event(3, "b")],
    );
    let v = check(&three(), &[s]);
    assert!(
        v.described.iter().any(|d| d.contains("acked as seq")),
        "{v:?}"
    );
}

#[test]
fn two_subscribers_that_disagree_on_a_seq_are_caught() {
    let publishes = vec![unknown("t", "x"), unknown("t", "y")];
    let s0 = sub("s0", vec![first("E", 0), event(1, "x")]);
    let s1 = sub("s1", vec![first("E", 0), event(1, "y")]);
    let v = check(&publishes, &[s0, s1]);
    assert_eq!(v.mismatched, 1, "{v:?}");
}

#[test]
fn messages_before_a_subscription_are_not_expected() {
    let s = sub("s0", vec![first("E", 2), event(3, "c")]);
    let v = check(&three(), &[s]);
    assert!(v.passed(), "{v:?}");
    assert_eq!(v.expected_deliveries, 1);
}

#[test]
fn only_a_few_violations_are_described_but_all_are_counted() {
    let publishes: Vec<Publish> = (1..=50).map(|n| acked("t", &n.to_string(), n)).collect();
    let s = sub("s0", vec![first("E", 0)]);
    let v = check(&publishes, &[s]);
    assert_eq!((v.lost, v.violations), (50, 50));
    assert_eq!(v.described.len(), DESCRIBED);
}
