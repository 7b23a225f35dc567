//! Topic epochs: short, unpredictable, URL-safe names for one incarnation
//! of a topic, so that a client resuming with an old epoch is told it
//! missed messages instead of being given another topic's.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 72 random bits as 12 characters of URL-safe base64.
pub fn new_epoch() -> String {
    let mut bytes = [0u8; 9];
    if getrandom::fill(&mut bytes).is_err() {
        // The system's generator is unavailable (it never is on Linux
        // after boot): std's hasher keys are random per process, and a
        // fresh `RandomState` gives another key each time.
        let noise = RandomState::new().hash_one(std::time::SystemTime::now());
        bytes[..8].copy_from_slice(&noise.to_le_bytes());
    }
    bytes
        .chunks(3)
        .flat_map(|group| {
            let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
            [18, 12, 6, 0].map(|shift| char::from(ALPHABET[(n >> shift) as usize & 63]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn epochs_are_short_url_safe_and_differ() {
        let epochs: HashSet<String> = (0..1000).map(|_| new_epoch()).collect();
        assert_eq!(epochs.len(), 1000);
        for epoch in &epochs {
            assert_eq!(epoch.len(), 12);
            assert!(epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
}
