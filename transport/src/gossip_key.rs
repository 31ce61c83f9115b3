//! Authentication of gossip datagrams. Gossip (UDP, outside QUIC) has no TLS, so each packet
//! carries an HMAC-SHA256 tag under a key derived from the cluster secret: a node without the
//! secret can neither inject state nor be mistaken for a member.
//!
//! Sealed layout: `payload || timestamp (u64 big-endian unix millis) || tag (32 bytes)`, the tag
//! covering payload and timestamp. The timestamp lets receivers drop stale replays
//! ([`GossipKey::open_fresh`]); it is not a secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

use crate::error::IdentityError;
use crate::identity::hkdf_expand;

/// HKDF info label of the gossip key, distinct from the CA seed's.
const GOSSIP_KEY_INFO: &[u8] = b"torua/v1 gossip hmac-sha256 key";
const TIMESTAMP_LEN: usize = 8;
const TAG_LEN: usize = 32;

/// Bytes [`GossipKey::seal`] adds to a payload.
pub const SEAL_OVERHEAD: usize = TIMESTAMP_LEN + TAG_LEN;

/// HMAC key shared by all members of a cluster.
#[derive(Clone)]
pub struct GossipKey {
    key: hmac::Key,
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

impl GossipKey {
    /// Derives the key from the cluster secret; the cluster id is the HKDF salt.
    pub fn derive(cluster_secret: &str, cluster_id: &str) -> Result<GossipKey, IdentityError> {
        let mut bytes = [0u8; 32];
        hkdf_expand(cluster_secret, cluster_id, GOSSIP_KEY_INFO, &mut bytes)?;
        Ok(GossipKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// Appends the current time and the tag.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        self.seal_at(payload, unix_millis())
    }

    fn seal_at(&self, payload: &[u8], millis: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        out.extend_from_slice(payload);
        out.extend_from_slice(&millis.to_be_bytes());
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Returns the payload if the tag verifies (constant-time), whatever its age.
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        self.open_with_time(sealed).map(|(payload, _)| payload)
    }

    /// Like [`open`](Self::open), but also rejects packets whose timestamp is more than
    /// `max_skew` away from our clock (replays of old packets, badly skewed clocks).
    pub fn open_fresh<'a>(&self, sealed: &'a [u8], max_skew: Duration) -> Option<&'a [u8]> {
        let (payload, millis) = self.open_with_time(sealed)?;
        let skew = unix_millis().abs_diff(millis);
        (u128::from(skew) <= max_skew.as_millis()).then_some(payload)
    }

    fn open_with_time<'a>(&self, sealed: &'a [u8]) -> Option<(&'a [u8], u64)> {
        let body_len = sealed.len().checked_sub(TAG_LEN)?;
        let payload_len = body_len.checked_sub(TIMESTAMP_LEN)?;
        let (body, tag) = sealed.split_at(body_len);
        hmac::verify(&self.key, body, tag).ok()?;
        let mut ts = [0u8; TIMESTAMP_LEN];
        ts.copy_from_slice(&body[payload_len..]);
        Some((&body[..payload_len], u64::from_be_bytes(ts)))
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CA_SEED_INFO;

    #[test]
    fn sealed_bytes_open_and_tampering_is_rejected() {
        let key = GossipKey::derive("s3cret", "c1").unwrap();
        let sealed = key.seal(b"hello members");
        assert_eq!(sealed.len(), 13 + SEAL_OVERHEAD);
        assert_eq!(key.open(&sealed), Some(&b"hello members"[..]));
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(key.open(&bad), None, "flipped bit {bit} accepted");
        }
        assert_eq!(key.open(&sealed[..sealed.len() - 1]), None);
        assert_eq!(key.open(&[]), None);
        assert_eq!(key.open(&[0u8; SEAL_OVERHEAD - 1]), None);
        // Empty payloads are fine.
        assert_eq!(key.open(&key.seal(b"")), Some(&b""[..]));
    }

    #[test]
    fn other_secret_or_cluster_is_rejected() {
        let key = GossipKey::derive("s3cret", "c1").unwrap();
        let sealed = key.seal(b"x");
        assert_eq!(
            GossipKey::derive("s3cret2", "c1").unwrap().open(&sealed),
            None
        );
        assert_eq!(
            GossipKey::derive("s3cret", "c2").unwrap().open(&sealed),
            None
        );
        assert!(GossipKey::derive("s3cret", "c1")
            .unwrap()
            .open(&sealed)
            .is_some());
    }

    #[test]
    fn stale_packets_are_rejected_by_open_fresh() {
        let key = GossipKey::derive("s3cret", "c1").unwrap();
        let old = key.seal_at(b"x", unix_millis() - 60_000);
        assert!(key.open(&old).is_some());
        assert!(key.open_fresh(&old, Duration::from_secs(30)).is_none());
        assert!(key
            .open_fresh(&key.seal(b"x"), Duration::from_secs(30))
            .is_some());
    }

    #[test]
    fn gossip_key_and_ca_seed_are_independent() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        hkdf_expand("s", "c", CA_SEED_INFO, &mut a).unwrap();
        hkdf_expand("s", "c", GOSSIP_KEY_INFO, &mut b).unwrap();
        assert_ne!(a, b);
    }
}
