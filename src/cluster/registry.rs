//! The coordinator's registry: which nodes registered, with what, and their last health report.
//!
//! Only the coordinator holds entries, and only for its current term: when a node stops being
//! coordinator, or a new term begins, the registry starts empty and is rebuilt from the
//! re-registrations every node sends when it sees the coordinator change. Entries of members that
//! left, died or restarted (older generation) are not listed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use membership::ClusterView;

use crate::cluster::health::now_ms;
use crate::cluster::messages::{HealthReport, Registration, RegistryEntry};

#[derive(Default)]
pub struct Registry {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The coordinator term the entries belong to; `None` while this node does not coordinate.
    term: Option<u64>,
    entries: BTreeMap<String, Entry>,
}

struct Entry {
    registration: Registration,
    registered_at_ms: u64,
    last_report: Option<HealthReport>,
    last_report_at: Option<Instant>,
}

/// Why a registry operation was refused.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    NotCoordinator,
    NotRegistered,
}

impl Registry {
    /// Adds or replaces a node's registration. Returns the term it was accepted under.
    pub fn register(&self, view: &ClusterView, registration: Registration) -> Result<u64, Refusal> {
        let mut state = self.inner.lock().expect("registry lock");
        let term = state.sync(view)?;
        let id = registration.node_id.clone();
        state.entries.insert(
            id,
            Entry {
                registration,
                registered_at_ms: now_ms(),
                last_report: None,
                last_report_at: None,
            },
        );
        Ok(term)
    }

    /// Records a health report from a registered node (same generation).
    pub fn report(&self, view: &ClusterView, report: HealthReport) -> Result<(), Refusal> {
        let mut state = self.inner.lock().expect("registry lock");
        state.sync(view)?;
        match state.entries.get_mut(&report.node_id) {
            Some(e) if e.registration.generation == report.generation => {
                e.last_report = Some(report);
                e.last_report_at = Some(Instant::now());
                Ok(())
            }
            _ => Err(Refusal::NotRegistered),
        }
    }

    /// Entries of members that are in the view with the registered generation, by node id.
    pub fn entries(&self, view: &ClusterView) -> Result<Vec<RegistryEntry>, Refusal> {
        let mut state = self.inner.lock().expect("registry lock");
        state.sync(view)?;
        Ok(state
            .entries
            .values()
            .filter(|e| {
                view.members.iter().any(|m| {
                    m.node_id.as_str() == e.registration.node_id
                        && m.generation == e.registration.generation
                        && m.is_live()
                })
            })
            .map(|e| RegistryEntry {
                registration: e.registration.clone(),
                registered_at_ms: e.registered_at_ms,
                last_report: e.last_report.clone(),
                last_report_ms_ago: e.last_report_at.map(|t| t.elapsed().as_millis() as u64),
            })
            .collect())
    }
}

impl State {
    /// Drops everything when this node does not coordinate or a new term began.
    fn sync(&mut self, view: &ClusterView) -> Result<u64, Refusal> {
        if !view.is_coordinator() {
            self.term = None;
            self.entries.clear();
            return Err(Refusal::NotCoordinator);
        }
        // The coordinator's own claim is the highest term it knows.
        let term = view.term.unwrap_or(view.max_term);
        if self.term != Some(term) {
            self.term = Some(term);
            self.entries.clear();
        }
        Ok(term)
    }
}
