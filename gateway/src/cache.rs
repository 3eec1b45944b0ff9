//! The result cache: results kept as the Arrow IPC FlightData frames that were streamed,
//! keyed by the *effective* query (after row filters and masks were applied, identity
//! substituted), the pool, the session defaults and the versions of the catalogs read.
//!
//! - Two callers share an entry only when the worker would run exactly the same statement
//!   for both; any difference in filters or masks is a difference in the SQL, so in the key.
//!   The full key is stored and compared on every hit: a digest collision cannot serve a
//!   wrong result.
//! - Concurrent identical misses execute once ([`Fill`]): the first caller's worker stream
//!   feeds every caller as frames arrive; frames are kept until the result is known to fit
//!   the per-entry cap, then stored.
//! - Writes through the gateway bump the versions of the catalogs they touch (old keys are
//!   never looked up again) and evict the entries that read the tables they change.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::FlightData;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use quiver_policies::TableRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::Status;

use crate::config::{CacheCompression, CacheConfig};
use crate::error::{GatewayError, Result};
use crate::flight::FlightDataStream;
use crate::metrics::Metrics;

/// Request header (or session option `cache_control`) with the client's cache control.
pub const CACHE_CONTROL_HEADER: &str = "x-quiver-cache-control";
/// Response header saying how the result was served: `HIT`, `MISS` or `BYPASS`.
pub const CACHE_STATUS_HEADER: &str = "x-quiver-cache";

/// How the client wants the cache used for one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// Serve from the cache when possible, store misses.
    #[default]
    Default,
    /// Never serve from the cache; the fresh result replaces any stored one.
    NoCache,
    /// Serve only from the cache; a miss is an error and runs nothing.
    OnlyIfCached,
    /// Serve only entries younger than this.
    MaxAge(Duration),
}

impl Control {
    /// Parses `no-cache`, `only-if-cached` or `max-age=<seconds>` (case-insensitive).
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        let v = value.trim().to_ascii_lowercase();
        match v.as_str() {
            "" | "default" => Ok(Control::Default),
            "no-cache" => Ok(Control::NoCache),
            "only-if-cached" => Ok(Control::OnlyIfCached),
            _ => match v.strip_prefix("max-age=").map(str::parse::<u64>) {
                Some(Ok(secs)) => Ok(Control::MaxAge(Duration::from_secs(secs))),
                _ => {
                    Err(format!("`{value}` is not a cache control (use no-cache, only-if-cached or max-age=<seconds>)"))
                }
            },
        }
    }
}

/// How a result was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache, or from another caller's identical execution in flight.
    Hit,
    /// Executed on a worker (and stored if it qualifies).
    Miss,
    /// Not eligible for the cache (or the cache is off).
    Bypass,
}

impl CacheStatus {
    /// `HIT`, `MISS` or `BYPASS`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Everything that decides a result. Stored in full with the entry and compared on hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// The effective SQL the worker runs.
    pub sql: String,
    /// The pool it runs on.
    pub pool: String,
    /// Default catalog for unqualified names.
    pub catalog: String,
    /// Default schema for unqualified names.
    pub schema: String,
    /// Versions of the catalogs and tables read (bumped by writes through the gateway and by
    /// evictions).
    pub versions: Vec<(String, u64)>,
}

impl CacheKey {
    /// SHA-256 over every field, length-prefixed.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |s: &[u8]| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s);
        };
        field(self.sql.as_bytes());
        field(self.pool.as_bytes());
        field(self.catalog.as_bytes());
        field(self.schema.as_bytes());
        for (c, v) in &self.versions {
            field(c.as_bytes());
            field(&v.to_le_bytes());
        }
        h.finalize().into()
    }
}

/// What a cache-eligible statement's ticket carries to its DoGet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheTicket {
    /// The key.
    pub key: CacheKey,
    /// Tables read (eviction by table).
    pub tables: Vec<TableRef>,
    /// How long the entry lives.
    pub ttl_secs: u64,
    /// Serve from the cache at DoGet (`false` with `no-cache`).
    pub read: bool,
    /// With `max-age`: serve only entries younger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// For a prepared statement: the worker handle (SQL and bound parameters), to plan it
    /// again should the entry be evicted before DoGet.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    pub prepared: Option<Vec<u8>>,
}

mod opt_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => STANDARD.decode(text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// One stored frame.
#[derive(Debug, Clone)]
struct StoredFrame {
    header: Bytes,
    body: Bytes,
    app_metadata: Bytes,
    /// Body length before compression; `Some` when `body` is zstd-compressed.
    raw_len: Option<usize>,
}

/// A stored result.
#[derive(Debug)]
pub struct Entry {
    key: CacheKey,
    frames: Vec<StoredFrame>,
    /// Bytes held (compressed sizes).
    pub stored_bytes: usize,
    /// Bytes of the IPC frames as streamed.
    pub arrow_bytes: usize,
    /// Rows.
    pub rows: u64,
    created: Instant,
    ttl: Duration,
    tables: BTreeSet<TableRef>,
}

impl Entry {
    /// The Arrow schema (from the stream's first message).
    pub fn schema(&self) -> Result<datafusion::arrow::datatypes::Schema> {
        let first = self.frames.first().ok_or_else(|| GatewayError::Internal("cached result without frames".into()))?;
        let data = FlightData {
            data_header: first.header.clone(),
            data_body: Bytes::new(),
            app_metadata: Bytes::new(),
            flight_descriptor: None,
        };
        datafusion::arrow::datatypes::Schema::try_from(&data)
            .map_err(|e| GatewayError::Internal(format!("cached schema: {e}")))
    }

    /// Age of the entry.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

struct EntryExpiry;

impl moka::Expiry<[u8; 32], Arc<Entry>> for EntryExpiry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Arc<Entry>, _: std::time::Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The cache.
pub struct ResultCache {
    config: CacheConfig,
    max_entry_bytes: usize,
    entries: moka::sync::Cache<[u8; 32], Arc<Entry>>,
    fills: Mutex<HashMap<[u8; 32], Arc<Fill>>>,
    versions: Mutex<BTreeMap<String, u64>>,
    metrics: Arc<Metrics>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache").field("entries", &self.entries.entry_count()).finish_non_exhaustive()
    }
}

/// How a DoGet of a cache-eligible statement proceeds.
pub enum Joined {
    /// The result is stored: stream it.
    Stored(Arc<Entry>),
    /// Another caller is executing it: stream its frames.
    Follow(Arc<Fill>),
    /// This caller executes it and feeds the fill.
    Lead(Arc<Fill>),
}

impl ResultCache {
    /// A cache as configured.
    pub fn new(config: CacheConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let max = quiver_engine::config::parse_bytes(&config.max_size).map_err(GatewayError::InvalidArgument)?;
        let max_entry_bytes =
            quiver_engine::config::parse_bytes(&config.max_entry_size).map_err(GatewayError::InvalidArgument)?;
        let listener_metrics = metrics.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max as u64)
            .weigher(|_, e: &Arc<Entry>| u32::try_from(e.stored_bytes.max(1)).unwrap_or(u32::MAX))
            .expire_after(EntryExpiry)
            .eviction_listener(move |_, e: Arc<Entry>, cause| {
                let reason = match cause {
                    moka::notification::RemovalCause::Expired => "expired",
                    moka::notification::RemovalCause::Size => "size",
                    moka::notification::RemovalCause::Explicit => "invalidated",
                    moka::notification::RemovalCause::Replaced => "replaced",
                };
                listener_metrics.cache_evicted(reason, e.stored_bytes);
            })
            .build();
        Ok(ResultCache {
            config,
            max_entry_bytes,
            entries,
            fills: Mutex::new(HashMap::new()),
            versions: Mutex::new(BTreeMap::new()),
            metrics,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Whether results reading `catalog` may be kept.
    pub fn is_volatile(&self, catalog: &str) -> bool {
        self.config.volatile_catalogs.iter().any(|c| c == catalog)
    }

    /// The entry lifetime for results reading `catalogs`: the shortest of their
    /// `catalog_ttl_secs`, and of `ttl_secs` when some catalog read has no override (so an
    /// override may lengthen the lifetime too, when every catalog read has one).
    pub fn ttl_for(&self, catalogs: &BTreeSet<String>) -> Duration {
        let overrides: Vec<u64> =
            catalogs.iter().filter_map(|c| self.config.catalog_ttl_secs.get(c).copied()).collect();
        let all_overridden = !catalogs.is_empty() && overrides.len() == catalogs.len();
        let default = (!all_overridden).then_some(self.config.ttl_secs);
        let secs = overrides.into_iter().chain(default).min().unwrap_or(self.config.ttl_secs);
        Duration::from_secs(secs)
    }

    /// The current versions of `tables` and of their catalogs (a write bumps its tables'; an
    /// eviction by catalog bumps the catalog's).
    pub fn versions(&self, tables: &BTreeSet<TableRef>) -> Vec<(String, u64)> {
        let v = self.versions.lock();
        let catalogs: BTreeSet<&str> = tables.iter().map(|t| t.catalog.as_str()).collect();
        let mut out: Vec<(String, u64)> = vec![(ALL.to_string(), v.get(ALL).copied().unwrap_or(0))];
        out.extend(catalogs.into_iter().map(|c| (c.to_string(), v.get(c).copied().unwrap_or(0))));
        for t in tables {
            let name = t.to_string();
            let version = v.get(&name).copied().unwrap_or(0);
            out.push((name, version));
        }
        out
    }

    /// The stored entry for `key`, if it is younger than `max_age`.
    pub fn lookup(&self, key: &CacheKey, max_age: Option<Duration>) -> Option<Arc<Entry>> {
        let entry = self.entries.get(&key.digest())?;
        if entry.key != *key || max_age.is_some_and(|m| entry.age() > m) {
            return None;
        }
        Some(entry)
    }

    /// Counts a request's outcome (and the hit ratio). `user` goes to the debug log only.
    pub fn count(&self, user: &str, status: CacheStatus) {
        tracing::debug!(user, outcome = status.as_str(), "cache");
        match status {
            CacheStatus::Hit => self.hits.fetch_add(1, Ordering::Relaxed),
            CacheStatus::Miss => self.misses.fetch_add(1, Ordering::Relaxed),
            CacheStatus::Bypass => 0,
        };
        let (h, m) = (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed));
        self.metrics.cache_request(status.as_str(), h, m);
        self.metrics.cache_held(self.entries.weighted_size(), self.entries.entry_count());
    }

    /// At DoGet: the stored entry, an execution in flight to follow, or the lead.
    pub fn join(&self, ticket: &CacheTicket) -> Joined {
        let digest = ticket.key.digest();
        if ticket.read
            && let Some(e) = self.lookup(&ticket.key, ticket.max_age_secs.map(Duration::from_secs))
        {
            return Joined::Stored(e);
        }
        let mut fills = self.fills.lock();
        if ticket.read
            && let Some(fill) = fills.get(&digest)
            && fill.key == ticket.key
            && fill.joinable()
        {
            return Joined::Follow(fill.clone());
        }
        let fill = Arc::new(Fill::new(ticket.clone(), self.max_entry_bytes));
        fills.insert(digest, fill.clone());
        Joined::Lead(fill)
    }

    /// Feeds `fill` from `stream` (the worker's frames) until it ends or nobody reads, then
    /// stores the result if it fits.
    pub fn spawn_pump(self: &Arc<Self>, fill: Arc<Fill>, mut stream: FlightDataStream) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut progress = fill.progress.subscribe();
            let outcome = loop {
                // Back-pressure: no more than a window ahead of the slowest reader.
                loop {
                    if fill.readers() == 0 {
                        break;
                    }
                    if fill.ahead() < PUMP_WINDOW {
                        break;
                    }
                    if progress.changed().await.is_err() {
                        break;
                    }
                }
                if fill.readers() == 0 {
                    break Err(Status::cancelled("every caller went away"));
                }
                match stream.next().await {
                    Some(Ok(frame)) => fill.push(frame),
                    Some(Err(status)) => break Err(status),
                    None => break Ok(()),
                }
            };
            // Dropping the worker stream here ends the query (cancelled if unfinished).
            drop(stream);
            // Uncompressed, the entry is stored before any caller sees the end of the stream
            // (a caller asking again right away finds it); compressing takes longer, so then
            // the callers are released first.
            let store = outcome.is_ok() && fill.storable();
            let compressed = cache.config.compression != CacheCompression::None;
            if compressed {
                fill.finish(outcome.clone());
            }
            if store && let Some(entry) = fill.entry(cache.config.compression) {
                let digest = entry.key.digest();
                cache.entries.insert(digest, Arc::new(entry));
                // Apply the size bound now, not at some later maintenance.
                cache.entries.run_pending_tasks();
                cache.metrics.cache_held(cache.entries.weighted_size(), cache.entries.entry_count());
            }
            if !compressed {
                fill.finish(outcome);
            }
            cache.fills.lock().retain(|_, f| !Arc::ptr_eq(f, &fill));
        });
    }

    /// The lead could not start its execution: its followers get `status`.
    pub fn abandon(&self, fill: &Arc<Fill>, status: Status) {
        fill.finish(Err(status));
        self.fills.lock().retain(|_, f| !Arc::ptr_eq(f, fill));
    }

    /// Streams a stored entry, decompressing frame by frame as the caller reads.
    pub fn stream(entry: Arc<Entry>) -> FlightDataStream {
        let frames = (0..entry.frames.len()).map(move |i| {
            let f = &entry.frames[i];
            let body = match f.raw_len {
                Some(len) => zstd::bulk::decompress(&f.body, len)
                    .map(Bytes::from)
                    .map_err(|e| Status::internal(format!("cached frame: {e}")))?,
                None => f.body.clone(),
            };
            Ok(FlightData {
                flight_descriptor: None,
                data_header: f.header.clone(),
                app_metadata: f.app_metadata.clone(),
                data_body: body,
            })
        });
        Box::pin(futures::stream::iter(frames))
    }

    /// Evicts entries reading any of `tables` and bumps their catalogs' versions. Returns the
    /// number of entries evicted.
    pub fn invalidate_tables(&self, tables: &BTreeSet<TableRef>) -> usize {
        {
            let mut v = self.versions.lock();
            for t in tables {
                *v.entry(t.to_string()).or_default() += 1;
            }
        }
        self.evict_if(|e| e.tables.iter().any(|t| tables.contains(t)))
    }

    /// Evicts every entry reading `catalog`; bumps its version.
    pub fn invalidate_catalog(&self, catalog: &str) -> usize {
        *self.versions.lock().entry(catalog.to_string()).or_default() += 1;
        self.evict_if(|e| e.tables.iter().any(|t| t.catalog == catalog))
    }

    /// Evicts everything (and makes results being computed now unreachable).
    pub fn invalidate_all(&self) -> usize {
        *self.versions.lock().entry(ALL.to_string()).or_default() += 1;
        let n = self.entries.entry_count() as usize;
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
        n
    }

    fn evict_if(&self, matches: impl Fn(&Entry) -> bool) -> usize {
        let doomed: Vec<Arc<[u8; 32]>> = self.entries.iter().filter(|(_, e)| matches(e)).map(|(k, _)| k).collect();
        for k in &doomed {
            self.entries.invalidate(k.as_ref());
        }
        self.entries.run_pending_tasks();
        self.metrics.cache_held(self.entries.weighted_size(), self.entries.entry_count());
        doomed.len()
    }

    /// Entries and bytes held (after pending maintenance).
    pub fn held(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

/// The version that every key includes (bumped by evicting everything).
const ALL: &str = "*";

/// How many frames the worker stream may run ahead of the slowest caller.
const PUMP_WINDOW: usize = 64;

/// One execution shared by every caller that asked for the same key while it runs.
pub struct Fill {
    key: CacheKey,
    ticket: CacheTicket,
    max_bytes: usize,
    state: Mutex<FillState>,
    /// Bumped when frames arrive or the fill ends.
    arrived: watch::Sender<u64>,
    /// Bumped when a reader moves on or leaves.
    progress: watch::Sender<u64>,
}

struct FillState {
    /// Frames from index `base` on.
    frames: VecDeque<FlightData>,
    base: usize,
    bytes: usize,
    rows: u64,
    storable: bool,
    readers: HashMap<u64, usize>,
    next_reader: u64,
    done: Option<std::result::Result<(), Status>>,
}

impl Fill {
    fn new(ticket: CacheTicket, max_bytes: usize) -> Self {
        Fill {
            key: ticket.key.clone(),
            ticket,
            max_bytes,
            state: Mutex::new(FillState {
                frames: VecDeque::new(),
                base: 0,
                bytes: 0,
                rows: 0,
                storable: true,
                readers: HashMap::new(),
                next_reader: 0,
                done: None,
            }),
            arrived: watch::channel(0).0,
            progress: watch::channel(0).0,
        }
    }

    /// New callers may follow only while every frame is still held.
    fn joinable(&self) -> bool {
        let s = self.state.lock();
        s.storable && s.base == 0 && s.done.is_none()
    }

    fn storable(&self) -> bool {
        self.state.lock().storable
    }

    fn readers(&self) -> usize {
        self.state.lock().readers.len()
    }

    /// Frames held that the slowest reader has not taken yet.
    fn ahead(&self) -> usize {
        let s = self.state.lock();
        let total = s.base + s.frames.len();
        let slowest = s.readers.values().copied().min().unwrap_or(total);
        total - slowest
    }

    fn push(&self, frame: FlightData) {
        let mut s = self.state.lock();
        s.bytes += frame.data_header.len() + frame.data_body.len();
        s.rows += crate::flight::frame_rows(&frame);
        if s.storable && s.bytes > self.max_bytes {
            // Too big to keep: stream it, drop what every reader has taken.
            s.storable = false;
        }
        s.frames.push_back(frame);
        if !s.storable {
            Self::trim(&mut s);
        }
        drop(s);
        self.arrived.send_modify(|n| *n += 1);
    }

    fn trim(s: &mut FillState) {
        let slowest = s.readers.values().copied().min().unwrap_or(s.base + s.frames.len());
        while s.base < slowest && !s.frames.is_empty() {
            s.frames.pop_front();
            s.base += 1;
        }
    }

    fn finish(&self, outcome: std::result::Result<(), Status>) {
        self.state.lock().done = Some(outcome);
        self.arrived.send_modify(|n| *n += 1);
    }

    fn entry(&self, compression: CacheCompression) -> Option<Entry> {
        // A snapshot (the frames' bytes are shared, not copied), compressed outside the lock.
        let (frames, arrow_bytes, rows) = {
            let s = self.state.lock();
            if s.base != 0 {
                return None;
            }
            (s.frames.iter().cloned().collect::<Vec<_>>(), s.bytes, s.rows)
        };
        let mut stored_bytes = 0;
        let frames: Vec<StoredFrame> = frames
            .iter()
            .map(|f| {
                let (body, raw_len) = match compression {
                    CacheCompression::Zstd if f.data_body.len() > 512 => match zstd::bulk::compress(&f.data_body, 3) {
                        Ok(c) if c.len() < f.data_body.len() => (Bytes::from(c), Some(f.data_body.len())),
                        _ => (f.data_body.clone(), None),
                    },
                    _ => (f.data_body.clone(), None),
                };
                stored_bytes += f.data_header.len() + body.len() + f.app_metadata.len();
                StoredFrame { header: f.data_header.clone(), body, app_metadata: f.app_metadata.clone(), raw_len }
            })
            .collect();
        if frames.is_empty() {
            return None;
        }
        Some(Entry {
            key: self.key.clone(),
            frames,
            stored_bytes,
            arrow_bytes,
            rows,
            created: Instant::now(),
            ttl: Duration::from_secs(self.ticket.ttl_secs),
            tables: self.ticket.tables.iter().cloned().collect(),
        })
    }

    /// A caller's stream over this fill, from the first frame.
    pub fn reader(self: &Arc<Self>) -> FlightDataStream {
        let id = {
            let mut s = self.state.lock();
            let id = s.next_reader;
            s.next_reader += 1;
            let base = s.base;
            s.readers.insert(id, base);
            id
        };
        let reader = Reader { fill: self.clone(), id, pos: 0, arrived: self.arrived.subscribe(), ended: false };
        Box::pin(futures::stream::unfold(reader, |mut r| async move {
            if r.ended {
                return None;
            }
            loop {
                let next = {
                    let mut s = r.fill.state.lock();
                    if r.pos < s.base {
                        // Trimmed past us: cannot happen for a registered reader.
                        r.pos = s.base;
                    }
                    if let Some(frame) = s.frames.get(r.pos - s.base).cloned() {
                        r.pos += 1;
                        s.readers.insert(r.id, r.pos);
                        if !s.storable {
                            Fill::trim(&mut s);
                        }
                        Some(Some(Ok(frame)))
                    } else {
                        match &s.done {
                            Some(Ok(())) => Some(None),
                            Some(Err(status)) => Some(Some(Err(status.clone()))),
                            None => None,
                        }
                    }
                };
                match next {
                    Some(Some(item)) => {
                        r.fill.progress.send_modify(|n| *n += 1);
                        r.ended = item.is_err();
                        return Some((item, r));
                    }
                    Some(None) => return None,
                    None => {
                        if r.arrived.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        }))
    }
}

/// A caller reading a fill; leaving unregisters it (the pump stops when nobody reads).
struct Reader {
    fill: Arc<Fill>,
    id: u64,
    pos: usize,
    arrived: watch::Receiver<u64>,
    /// An error was returned: the stream is over.
    ended: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.fill.state.lock().readers.remove(&self.id);
        self.fill.progress.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_parse_and_bad_ones_are_named() {
        assert_eq!(Control::parse("no-cache"), Ok(Control::NoCache));
        assert_eq!(Control::parse(" Only-If-Cached "), Ok(Control::OnlyIfCached));
        assert_eq!(Control::parse("max-age=30"), Ok(Control::MaxAge(Duration::from_secs(30))));
        let e = Control::parse("max-age=soon").expect_err("bad");
        assert!(e.contains("max-age=soon"), "{e}");
    }

    #[test]
    fn lifetimes_take_the_shortest_override_and_the_default_unless_all_are_overridden() {
        let config = CacheConfig {
            ttl_secs: 300,
            catalog_ttl_secs: [("lake".to_string(), 30), ("archive".to_string(), 3600)].into_iter().collect(),
            ..CacheConfig::default()
        };
        let cache = ResultCache::new(config, Arc::new(Metrics::new())).expect("cache");
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(cache.ttl_for(&set(&["tpch"])), Duration::from_secs(300));
        assert_eq!(cache.ttl_for(&set(&["lake"])), Duration::from_secs(30));
        assert_eq!(cache.ttl_for(&set(&["archive"])), Duration::from_secs(3600));
        assert_eq!(cache.ttl_for(&set(&["archive", "tpch"])), Duration::from_secs(300));
        assert_eq!(cache.ttl_for(&set(&["archive", "lake"])), Duration::from_secs(30));
    }

    #[test]
    fn evictions_make_older_keys_unreachable() {
        let cache = ResultCache::new(CacheConfig::default(), Arc::new(Metrics::new())).expect("cache");
        let t = TableRef::new("c", "s", "t");
        let tables = BTreeSet::from([t.clone()]);
        let v0 = cache.versions(&tables);
        cache.invalidate_tables(&tables);
        let v1 = cache.versions(&tables);
        cache.invalidate_catalog("c");
        let v2 = cache.versions(&tables);
        cache.invalidate_all();
        let v3 = cache.versions(&tables);
        let all: BTreeSet<_> = [v0, v1, v2, v3].into_iter().collect();
        assert_eq!(all.len(), 4);
        // Another table's versions move only with its catalog or everything.
        let other = BTreeSet::from([TableRef::new("d", "s", "u")]);
        let before = cache.versions(&other);
        cache.invalidate_tables(&tables);
        assert_eq!(cache.versions(&other), before);
    }

    #[test]
    fn every_key_field_changes_the_digest() {
        let k = CacheKey {
            sql: "SELECT 1".into(),
            pool: "p".into(),
            catalog: "c".into(),
            schema: "s".into(),
            versions: vec![("c".into(), 0)],
        };
        let mut variants = vec![k.clone()];
        let mut v = k.clone();
        v.sql.push(' ');
        variants.push(v);
        let mut v = k.clone();
        v.pool = "q".into();
        variants.push(v);
        let mut v = k.clone();
        v.catalog = "d".into();
        variants.push(v);
        let mut v = k.clone();
        v.schema = "t".into();
        variants.push(v);
        let mut v = k.clone();
        v.versions[0].1 = 1;
        variants.push(v);
        // Field boundaries matter: ("ab","c") is not ("a","bc").
        let mut v = k.clone();
        v.catalog = "cs".into();
        v.schema = String::new();
        variants.push(v);
        let digests: BTreeSet<[u8; 32]> = variants.iter().map(CacheKey::digest).collect();
        assert_eq!(digests.len(), variants.len());
    }
}
