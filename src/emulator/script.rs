//! Test scripting: rules that change how the emulator answers downstream messages.
//!
//! The rules live in one immutable [`Script`] snapshot behind an `Arc`; every change builds a
//! new snapshot and bumps a version counter. Sessions compare the counter once per loop (one
//! atomic load) and take the new snapshot only when it moved, so the hot path takes no lock.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::NackCode;

/// `transient_nacks`: NACK a matching message id with `code` the first `times` times it
/// arrives (counted per message id, across connections), then let it through.
pub(crate) struct TransientRule {
    pred: Box<dyn Fn(&str) -> bool + Send + Sync>,
    times: u32,
    code: NackCode,
    /// Arrivals so far, by a 64-bit hash of the id (16 bytes an entry, so a
    /// long soak with `record_ids(false)` stays small).
    seen: Mutex<HashMap<u64, u32>>,
}

impl TransientRule {
    pub(crate) fn new(
        pred: Box<dyn Fn(&str) -> bool + Send + Sync>,
        times: u32,
        code: NackCode,
    ) -> Self {
        TransientRule {
            pred,
            times,
            code,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The NACK code if this arrival of `message_id` is to be refused.
    fn take(&self, message_id: &str) -> Option<NackCode> {
        if self.times == 0 || !(self.pred)(message_id) {
            return None;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let n = seen.entry(id_hash(message_id)).or_insert(0);
        if *n < self.times {
            *n += 1;
            Some(self.code.clone())
        } else {
            None
        }
    }
}

/// FNV-1a: stable, and collisions among test ids are vanishingly rare.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl fmt::Debug for TransientRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransientRule")
            .field("times", &self.times)
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

/// One snapshot of every scripted rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Script {
    /// Tokens whose messages are NACKed with the given code.
    pub reject: HashMap<String, NackCode>,
    /// Transient NACK rules, checked in the order they were added.
    pub transient: Vec<Arc<TransientRule>>,
    /// How long answers to downstream messages are held back.
    pub ack_delay: Duration,
    /// Every connection drops after this many message stanzas.
    pub drop_every: Option<usize>,
}

impl Script {
    /// The scripted NACK for this arrival of a downstream message, if any: transient rules
    /// first (they model server trouble), then token rules.
    pub(crate) fn nack_for(&self, message_id: &str, target: &str) -> Option<NackCode> {
        for rule in &self.transient {
            if let Some(code) = rule.take(message_id) {
                return Some(code);
            }
        }
        if self.reject.is_empty() {
            return None;
        }
        self.reject.get(target).cloned()
    }
}

/// The shared, versioned holder of the current [`Script`].
#[derive(Debug, Default)]
pub(crate) struct ScriptCell {
    current: Mutex<Arc<Script>>,
    version: AtomicU64,
}

impl ScriptCell {
    /// The current version (cheap; compare before calling [`ScriptCell::snapshot`]).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current snapshot and its version.
    pub(crate) fn snapshot(&self) -> (Arc<Script>, u64) {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (Arc::clone(&guard), self.version.load(Ordering::Acquire))
    }

    /// Applies `change` to a copy of the current script and publishes it.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Script)) {
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Script::clone(&guard);
        change(&mut next);
        *guard = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
