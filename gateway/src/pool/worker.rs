//! One engine worker: its channel, the calls in flight on it, and its health.
//!
//! Health is learned two ways: a prober calls every worker with a real Flight SQL request on
//! an interval (see `health.rs`), and every real call that fails at the transport level counts
//! as a failure too. After `eject_after_failures` consecutive failures a worker is ejected
//! (no new calls) with exponential back-off; a successful probe re-admits it. A pool never
//! ejects its last usable worker: clients then get that worker's own error rather than a
//! pool that refuses everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use parking_lot::Mutex;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::worker_endpoint_uri;
use crate::error::{GatewayError, Result};

/// Largest message the gateway accepts from a worker.
const MAX_WORKER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How a pool judges and limits its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Time between two probes of a worker.
    pub interval: Duration,
    /// How long a probe may take.
    pub timeout: Duration,
    /// Consecutive failures (probes or real calls) that eject a worker.
    pub eject_after_failures: u32,
    /// First ejection's length; doubled for each further ejection in a row.
    pub backoff_base: Duration,
    /// Longest ejection.
    pub backoff_max: Duration,
    /// Most calls in flight on one worker; `None` is unlimited.
    pub max_concurrent_per_worker: Option<usize>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            eject_after_failures: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_concurrent_per_worker: None,
        }
    }
}

/// A worker's state as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerState {
    /// Takes new calls.
    Healthy,
    /// Failing but not ejected (under the threshold, or the pool's last usable worker).
    Suspect,
    /// Takes no new calls until a probe succeeds after the back-off.
    Ejected,
    /// Drained by an operator: no new calls, running ones finish.
    Draining,
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    ejections_in_a_row: u32,
    ejected_until: Option<Instant>,
    last_error: Option<String>,
    last_probe: Option<Instant>,
}

/// One engine worker.
#[derive(Debug)]
pub struct Worker {
    /// The URI as configured.
    pub uri: String,
    channel: Channel,
    outstanding: AtomicUsize,
    draining: AtomicBool,
    health: Mutex<Health>,
}

impl Worker {
    /// Connects lazily: the first call dials.
    pub fn connect(uri: &str) -> Result<Self> {
        let target = worker_endpoint_uri(uri).map_err(GatewayError::InvalidArgument)?;
        let mut endpoint = Endpoint::from_shared(target.clone())
            .map_err(|e| GatewayError::InvalidArgument(format!("worker `{uri}`: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(32 * 1024 * 1024));
        if target.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .map_err(|e| GatewayError::InvalidArgument(format!("worker `{uri}`: {e}")))?;
        }
        Ok(Worker {
            uri: uri.to_string(),
            channel: endpoint.connect_lazy(),
            outstanding: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
        })
    }

    /// A Flight client over the worker's shared channel.
    pub fn client(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_WORKER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_WORKER_MESSAGE_BYTES)
    }

    /// Calls in flight on this worker.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts one call in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight { worker: self.clone() }
    }

    /// Stops (or resumes) sending new calls to this worker; calls in flight finish.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// The worker's state now.
    pub fn state(&self) -> WorkerState {
        if self.draining.load(Ordering::Relaxed) {
            return WorkerState::Draining;
        }
        let health = self.health.lock();
        match health.ejected_until {
            Some(_) => WorkerState::Ejected,
            None if health.consecutive_failures > 0 => WorkerState::Suspect,
            None => WorkerState::Healthy,
        }
    }

    /// Whether new calls may go here (not draining, not ejected).
    pub fn usable(&self) -> bool {
        !matches!(self.state(), WorkerState::Draining | WorkerState::Ejected)
    }

    /// The last failure seen, for the admin API.
    pub fn last_error(&self) -> Option<String> {
        self.health.lock().last_error.clone()
    }

    /// When the worker was last probed.
    pub fn last_probe(&self) -> Option<Instant> {
        self.health.lock().last_probe
    }

    /// Whether an ejected worker's back-off is over (time for a re-admission probe).
    pub(super) fn probe_due(&self, now: Instant) -> bool {
        self.health.lock().ejected_until.is_none_or(|until| now >= until)
    }

    /// A call or probe succeeded: a failing or ejected worker is healthy again.
    pub fn record_success(&self, probe: bool) {
        let mut health = self.health.lock();
        if health.ejected_until.is_some() {
            tracing::info!(worker = %self.uri, "worker re-admitted");
        }
        *health =
            Health { last_probe: if probe { Some(Instant::now()) } else { health.last_probe }, ..Health::default() };
    }

    /// A call or probe failed at the transport level. `may_eject` is false when this is the
    /// pool's last usable worker. Returns true when this failure ejected the worker.
    pub fn record_failure(&self, error: &str, probe: bool, policy: &HealthPolicy, may_eject: bool) -> bool {
        let now = Instant::now();
        let mut health = self.health.lock();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        health.last_error = Some(error.to_string());
        if probe {
            health.last_probe = Some(now);
        }
        let due = health.consecutive_failures >= policy.eject_after_failures;
        let already = health.ejected_until.is_some_and(|until| now < until);
        if !due || already || !(may_eject || health.ejected_until.is_some()) {
            return false;
        }
        let factor = 1u32.checked_shl(health.ejections_in_a_row.min(16)).unwrap_or(u32::MAX);
        let backoff = policy.backoff_base.saturating_mul(factor).min(policy.backoff_max);
        health.ejections_in_a_row = health.ejections_in_a_row.saturating_add(1);
        health.ejected_until = Some(now + backoff);
        tracing::warn!(worker = %self.uri, failures = health.consecutive_failures, ?backoff, %error, "worker ejected");
        true
    }

    /// Maps a worker's failure: transport failures become UNAVAILABLE naming the worker;
    /// the worker's own statuses pass through.
    pub fn error(&self, status: tonic::Status) -> GatewayError {
        if is_transport(&status) {
            GatewayError::Unavailable(format!("worker {} is unavailable: {}", self.uri, status.message()))
        } else {
            GatewayError::Worker(status)
        }
    }
}

/// Whether a status from a worker call means the worker could not be reached or died (as
/// opposed to the worker answering with an error of its own).
pub fn is_transport(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled => {
            let m = status.message();
            m.contains("transport error")
                || m.contains("connection")
                || m.contains("broken pipe")
                || m.contains("stream no longer needed")
                || m.contains("h2 protocol error")
                || m.contains("error reading a body from connection")
        }
        _ => false,
    }
}

/// A call in flight on a worker.
#[derive(Debug)]
pub struct InFlight {
    worker: Arc<Worker>,
}

impl InFlight {
    /// The worker the call runs on.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.worker.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy { eject_after_failures: 2, backoff_base: Duration::from_millis(50), ..HealthPolicy::default() }
    }

    #[tokio::test]
    async fn failures_eject_with_backoff_and_success_readmits() {
        let w = Worker::connect("grpc://127.0.0.1:1").expect("worker");
        assert_eq!(w.state(), WorkerState::Healthy);
        assert!(!w.record_failure("boom", true, &policy(), true));
        assert_eq!(w.state(), WorkerState::Suspect);
        assert!(w.record_failure("boom", true, &policy(), true));
        assert_eq!(w.state(), WorkerState::Ejected);
        assert!(!w.usable());
        assert!(!w.probe_due(Instant::now()), "back-off not over");
        assert!(w.probe_due(Instant::now() + Duration::from_millis(60)));
        w.record_success(true);
        assert_eq!(w.state(), WorkerState::Healthy);
        assert_eq!(w.last_error(), None);
    }

    #[tokio::test]
    async fn the_last_usable_worker_is_never_ejected_and_drain_is_separate() {
        let w = Worker::connect("grpc://127.0.0.1:1").expect("worker");
        for _ in 0..5 {
            assert!(!w.record_failure("boom", true, &policy(), false));
        }
        assert_eq!(w.state(), WorkerState::Suspect);
        assert!(w.usable());
        w.set_draining(true);
        assert_eq!(w.state(), WorkerState::Draining);
        assert!(!w.usable());
        w.set_draining(false);
        assert!(w.usable());
    }

    #[test]
    fn transport_failures_are_told_from_worker_errors() {
        assert!(is_transport(&tonic::Status::unavailable("x")));
        assert!(is_transport(&tonic::Status::unknown("transport error")));
        assert!(is_transport(&tonic::Status::internal("h2 protocol error: stream reset")));
        assert!(!is_transport(&tonic::Status::invalid_argument("SQL error: connection")));
        assert!(!is_transport(&tonic::Status::internal("division by zero")));
    }
}
