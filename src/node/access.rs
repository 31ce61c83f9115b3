//! Who may call the HTTP API: API keys with roles.
//!
//! A key reads `torua_<id>_<secret>`. The cluster keeps only a record of it — id, name, role and
//! a salted SHA-256 of the secret — in the shard map, which the coordinator changes under a quorum
//! and pushes to every node: any node checks any key, and a revocation reaches every node with
//! that push. The bootstrap key (`TORUA_BOOTSTRAP_API_KEY`) is held, hashed, only by the nodes it
//! is given to. A cluster that forms with keys required on a coordinator without a bootstrap key
//! gets an initial admin key instead, printed once to that node's standard error. Secrets are compared in constant time and never logged. A client address that
//! keeps failing is answered more and more slowly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// What a key allows; each role includes the ones below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Health, cluster views, entity and chunk reads, traversals, `/retrieve`.
    Read,
    /// Read, plus ingest and deletes.
    Write,
    /// Everything: user Cypher, drain, broadcast, key management.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// A role name that is none of `read`, `write`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use read, write or admin")]
pub struct UnknownRole(String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

/// A key as the cluster stores it: no secret, only its salted hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Hex of 16 random bytes.
    pub salt: String,
    /// Hex of SHA-256(salt ‖ secret).
    pub hash: String,
    /// Unix milliseconds.
    pub created_ms: u64,
}

/// A key as `GET /keys` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// Names the key in `DELETE /keys/{id}`; also the middle part of the key itself.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// When it was created, unix milliseconds.
    pub created_ms: u64,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> KeyInfo {
        KeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            created_ms: r.created_ms,
        }
    }
}

/// Longest key name.
pub const MAX_NAME: usize = 100;
/// Most keys a cluster keeps (they travel in every shard-map push).
pub const MAX_KEYS: usize = 1000;
/// Shortest bootstrap key.
pub const MIN_BOOTSTRAP_LEN: usize = 20;
const PREFIX: &str = "torua_";

/// A new key: its record for the cluster and the full key, shown once to whoever created it.
pub fn new_key(name: &str, role: Role) -> (KeyRecord, String) {
    let id = hex(&random::<6>());
    let secret = hex(&random::<32>());
    let salt = random::<16>();
    let record = KeyRecord {
        id: id.clone(),
        name: name.to_string(),
        role,
        salt: hex(&salt),
        hash: hex(&digest(&salt, secret.as_bytes())),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    (record, format!("{PREFIX}{id}_{secret}"))
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header (401).
    Missing,
    /// A header that is not `Bearer <key>` or `ApiKey <key>`, or a key that is not one (401).
    Unknown,
    /// A valid key whose role is below what the route needs (403).
    Forbidden { have: Role, need: Role },
}

impl Denied {
    pub fn reason(&self) -> String {
        match self {
            Denied::Missing => "this API needs a key: send `Authorization: Bearer <key>` \
                                (create keys with `torua key create`)"
                .into(),
            Denied::Unknown => {
                "the API key is not valid (mistyped, or revoked); ask an admin for a key".into()
            }
            Denied::Forbidden { have, need } => format!(
                "this key has the {} role; this request needs {}",
                have.as_str(),
                need.as_str()
            ),
        }
    }

    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Unknown => "invalid",
            Denied::Forbidden { .. } => "forbidden",
        }
    }
}

/// Who made a request, once let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (`bootstrap` for the bootstrap key).
    pub key_id: String,
    pub role: Role,
}

/// Failures from one address within this window count together.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failures answered at once before answers slow down.
const FREE_FAILURES: u32 = 5;
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Addresses remembered at most (the oldest window is forgotten first).
const MAX_TRACKED: usize = 10_000;

/// The node's key checking.
pub struct Access {
    /// Off only in the loopback development mode (or when an operator turns it off).
    pub enabled: bool,
    /// Salt and hash of the bootstrap key.
    bootstrap: Option<([u8; 16], [u8; 32])>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Access {
    pub fn new(enabled: bool, bootstrap: Option<&str>) -> Access {
        let bootstrap = bootstrap.map(|key| {
            let salt = random::<16>();
            (salt, digest(&salt, key.as_bytes()))
        });
        Access {
            enabled,
            bootstrap,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this node was given a bootstrap key.
    pub fn has_bootstrap(&self) -> bool {
        self.bootstrap.is_some()
    }

    /// Checks an `Authorization` header value against the bootstrap key and `keys`.
    pub fn authenticate(&self, header: Option<&str>, keys: &[KeyRecord]) -> Result<Caller, Denied> {
        let header = header.ok_or(Denied::Missing)?.trim();
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("ApiKey "))
            .map(str::trim)
            .ok_or(Denied::Unknown)?;
        if let Some((salt, hash)) = &self.bootstrap {
            if bool::from(digest(salt, key.as_bytes()).ct_eq(hash)) {
                return Ok(Caller {
                    key_id: "bootstrap".into(),
                    role: Role::Admin,
                });
            }
        }
        let (id, secret) = key
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(Denied::Unknown)?;
        let record = keys.iter().find(|k| k.id == id).ok_or(Denied::Unknown)?;
        let (Some(salt), Some(hash)) = (unhex(&record.salt), unhex(&record.hash)) else {
            return Err(Denied::Unknown);
        };
        if bool::from(digest(&salt, secret.as_bytes()).as_slice().ct_eq(&hash)) {
            Ok(Caller {
                key_id: record.id.clone(),
                role: record.role,
            })
        } else {
            Err(Denied::Unknown)
        }
    }

    /// Notes a failed attempt from `from`; returns how long to wait before answering it.
    pub fn failed(&self, from: IpAddr) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(from).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        delay_after(entry.0)
    }
}

/// The wait before answering the `n`th failure within a window: none for the first few, then
/// doubling from 100 ms up to `MAX_DELAY`.
fn delay_after(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (n - FREE_FAILURES - 1).min(10);
    (Duration::from_millis(100) * (1u32 << doublings)).min(MAX_DELAY)
}

fn digest(salt: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(secret);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_authenticates_with_its_role_and_nothing_else_does() {
        let access = Access::new(true, None);
        let (record, key) = new_key("ci", Role::Write);
        assert!(!record.hash.contains(&key[PREFIX.len() + 13..]));
        let keys = vec![record.clone()];
        for header in [format!("Bearer {key}"), format!("ApiKey {key}")] {
            let caller = access.authenticate(Some(&header), &keys).unwrap();
            assert_eq!(caller.role, Role::Write);
            assert_eq!(caller.key_id, record.id);
        }
        assert_eq!(access.authenticate(None, &keys), Err(Denied::Missing));
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push(if key.ends_with('0') { '1' } else { '0' });
        for header in [
            format!("Bearer {wrong}"),
            format!("Basic {key}"),
            "Bearer torua_".into(),
            "Bearer ".into(),
            format!("Bearer {key}x"),
        ] {
            assert_eq!(
                access.authenticate(Some(&header), &keys),
                Err(Denied::Unknown),
                "{header}"
            );
        }
        // Revoked: the record is gone from the map.
        assert_eq!(
            access.authenticate(Some(&format!("Bearer {key}")), &[]),
            Err(Denied::Unknown)
        );
    }

    #[test]
    fn the_bootstrap_key_is_admin_on_the_nodes_given_it() {
        let access = Access::new(true, Some("an-operator-chosen-bootstrap-key"));
        let caller = access
            .authenticate(Some("Bearer an-operator-chosen-bootstrap-key"), &[])
            .unwrap();
        assert_eq!(caller.role, Role::Admin);
        assert_eq!(
            Access::new(true, None)
                .authenticate(Some("Bearer an-operator-chosen-bootstrap-key"), &[]),
            Err(Denied::Unknown)
        );
    }

    #[test]
    fn repeated_failures_from_one_address_slow_down() {
        let access = Access::new(true, None);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let delays: Vec<Duration> = (0..12).map(|_| access.failed(ip)).collect();
        assert!(delays[..5].iter().all(|d| d.is_zero()));
        assert_eq!(delays[5], Duration::from_millis(100));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
        assert!(access.failed("10.0.0.2".parse().unwrap()).is_zero());
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Admin > Role::Write && Role::Write > Role::Read);
        assert_eq!("write".parse::<Role>(), Ok(Role::Write));
        assert!("root".parse::<Role>().is_err());
    }
}
