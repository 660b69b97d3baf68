//! Admission control (API.md promise 9): overload turns into fast 503s, not into timeouts
//! of healthy dependencies.
//!
//! A bounded queue with a deadline, in front of every `/v1` request, checked in the one
//! middleware every request passes ([`super::extract::finish`]); health, readiness and
//! metrics stay open. At most `--max-in-flight` requests run at once; up to
//! `--max-queued` more wait for a slot, each for at most `--admission-wait-ms`. A request
//! that finds the queue full, or whose wait runs out, gets 503 with `Retry-After: 1` and
//! `{"error": "overloaded", …}`. So what is admitted keeps a bounded latency (its wait plus
//! its own work among at most `--max-in-flight` others), and Redis and Postgres never see
//! more concurrent calls than the instance can finish before their timeouts: load alone
//! cannot open a breaker. Postgres reads have a second, smaller limit of their own (in
//! [`crate::postgres`]), so misses never take the pool connections writes need.
//!
//! A hit pays one atomic compare-and-swap to enter and one add to leave; nothing waits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::ApiError;

/// The settings of admission control.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionSettings {
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub wait: Duration,
}

/// The gate every `/v1` request passes.
pub struct Admission {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    settings: AdmissionSettings,
    /// Requests refused because the queue was full, or because their wait ran out.
    pub refused_full: AtomicU64,
    pub refused_late: AtomicU64,
}

/// A snapshot, for `/metrics` and `/v1/admin/cache`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AdmissionState {
    pub in_flight: usize,
    pub queued: usize,
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub refused_full: u64,
    pub refused_late: u64,
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(settings.max_in_flight)),
            queued: AtomicUsize::new(0),
            settings,
            refused_full: AtomicU64::new(0),
            refused_late: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> AdmissionState {
        AdmissionState {
            in_flight: self.settings.max_in_flight - self.slots.available_permits(),
            queued: self.queued.load(Ordering::Relaxed),
            max_in_flight: self.settings.max_in_flight,
            max_queued: self.settings.max_queued,
            refused_full: self.refused_full.load(Ordering::Relaxed),
            refused_late: self.refused_late.load(Ordering::Relaxed),
        }
    }

    /// For a request that is `guarded` (a `/v1` route): its slot (held while it runs), or
    /// the 503 `overloaded` answer. Other requests pass with no slot.
    pub async fn admit(
        &self,
        guarded: bool,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Response> {
        if !guarded {
            return Ok(None);
        }
        match self.enter().await {
            Some(slot) => Ok(Some(slot)),
            None => Err(ApiError::overloaded(
                "this instance is at its limit of concurrent requests; retry after the Retry-After delay",
            )
            .into_response()),
        }
    }

    /// A slot now, or after a wait in the queue; `None` when the request must be refused.
    async fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        // Join the queue unless it is full.
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.settings.max_queued).then_some(n + 1)
            })
            .is_ok();
        if !joined {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let waited =
            tokio::time::timeout(self.settings.wait, self.slots.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                self.refused_late.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}
