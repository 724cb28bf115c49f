//! The connections keygate holds open: how many, from whom, and for how long.
//!
//! A client that connects and says nothing, or one byte a second, or leaves a kept-alive
//! connection idle for ever, holds one of the process's file descriptors; enough of them and
//! nobody else is served. So:
//! - a request's head must arrive within `server.header_read_timeout_ms`, counted from the
//!   connection's opening or, on a kept-alive connection, from the next request's first byte;
//! - a connection may wait for its next request, and a request being served may go without a
//!   byte moving either way, for `server.idle_timeout_ms`;
//! - at most `server.max_connections` are open at once, never more than the open-files limit
//!   leaves room for; and one address (an IPv6 /64) holds at most a quarter of them, so a single
//!   client cannot take every slot. Trusted proxies, which carry everyone's requests, are exempt
//!   from the share. A connection over either is answered a bare 503 and closed at once.
//!
//! The deadlines are not timers. Each connection keeps its phase and deadline in one atomic
//! word, rewritten with a relaxed store as it moves between phases, read against a coarse clock
//! that one task advances as it sweeps every connection several times per timeout. hyper's own
//! header-read timeout would instead box a sleep and insert it into (and remove it from) the
//! timer wheel on every request, and it cannot tell an idle connection from a slow head.
//!
//! What this must never do: read a byte from a connection it refuses, or close a connection
//! whose request is being served while bytes are moving.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::problem::{ApiError, ProblemCode};

/// One address may hold this fraction of the connections (a quarter).
const PER_ADDRESS_SHARE: usize = 4;

/// The limits as the server applies them: the configuration, lowered to what the process can
/// afford.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
    pub max_connections: usize,
    /// Networks whose connections are not held to the per-address share (trusted proxies).
    pub exempt: Vec<IpNet>,
}

impl Limits {
    /// The configured limits, with `max_connections` lowered to what `open_files` (the soft
    /// limit, if known) leaves after the descriptors the store and the log need. Also returns
    /// the configured cap when it was lowered, for the log.
    pub fn new(config: &Config, open_files: Option<u64>) -> (Self, Option<usize>) {
        let configured = config.server.max_connections as usize;
        let affordable = open_files.map_or(configured, |open_files| {
            let reserved = reserved_descriptors(config.store.max_connections);
            usize::try_from(open_files.saturating_sub(reserved).max(1)).unwrap_or(usize::MAX)
        });
        let limits = Self {
            header_read: Duration::from_millis(config.server.header_read_timeout_ms),
            idle: Duration::from_millis(config.server.idle_timeout_ms),
            max_connections: configured.min(affordable),
            exempt: config.trusted_proxies.iter().map(|n| n.0).collect(),
        };
        let lowered = (affordable < configured).then_some(configured);
        (limits, lowered)
    }

    /// How many connections one address may hold.
    pub fn per_address(&self) -> usize {
        (self.max_connections / PER_ADDRESS_SHARE).max(1)
    }

    /// How often the deadlines are checked: a tenth of the shorter timeout, so a connection is
    /// closed at most a fifth late, within bounds a busy scheduler will keep.
    fn tick(&self) -> Duration {
        (self.header_read.min(self.idle) / 10)
            .clamp(Duration::from_millis(10), Duration::from_millis(500))
    }
}

/// Descriptors kept back from connections: the listener, the log, the runtime's own, and the
/// store's (SQLite opens three files per pooled connection: the database, its WAL and its
/// shared memory).
pub fn reserved_descriptors(store_connections: u32) -> u64 {
    64 + 3 * u64::from(store_connections)
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("server.max_connections ({0}) are open")]
    Full(usize),
    #[error("the address already holds its share ({0}) of the connections")]
    AddressShare(usize),
}

/// The open connections, their count per address, and the task that closes the overdue.
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    per_address: usize,
    clock: Arc<Clock>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    /// Every open connection's watch, for the sweep.
    watches: HashMap<u64, Arc<Watch>>,
    /// Connections per address, for those held to the share.
    by_address: HashMap<IpAddr, usize>,
}

impl Connections {
    pub fn new(limits: Limits) -> Self {
        let tick = limits.tick();
        let clock = Arc::new(Clock {
            started: Instant::now(),
            now_ms: AtomicU64::new(0),
            // A deadline is read off a clock up to a tick behind: a tick more, so none is early.
            header_read_ms: millis(limits.header_read + tick),
            idle_ms: millis(limits.idle + tick),
        });
        Self {
            shared: Arc::new(Shared {
                per_address: limits.per_address(),
                limits,
                clock,
                open: Mutex::new(Open::default()),
            }),
        }
    }

    /// Runs for ever: advances the clock and closes every connection past its deadline.
    pub fn sweep(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            let mut every = tokio::time::interval(shared.limits.tick());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let now = shared.clock.advance();
                let open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
                for watch in open.watches.values() {
                    watch.expire_if_overdue(now);
                }
            }
        }
    }

    /// A slot for a new connection from `peer`, or why there is none.
    pub fn admit(&self, peer: IpAddr) -> Result<Slot, Refusal> {
        let shared = &self.shared;
        let address =
            (!shared.limits.exempt.iter().any(|n| n.contains(&peer))).then(|| address_key(peer));
        let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.watches.len() >= shared.limits.max_connections {
            return Err(Refusal::Full(shared.limits.max_connections));
        }
        if let Some(address) = address {
            let held = open.by_address.entry(address).or_default();
            if *held >= shared.per_address {
                return Err(Refusal::AddressShare(shared.per_address));
            }
            *held += 1;
        }
        let id = open.next_id;
        open.next_id += 1;
        // Once per connection, the clock is read afresh: a new connection's deadline is exact
        // even when the sweep runs late.
        shared.clock.advance();
        let watch = Arc::new(Watch {
            state: AtomicU64::new(pack(
                HEAD,
                shared.clock.deadline(shared.clock.header_read_ms),
            )),
            waker: AtomicWaker::new(),
            clock: Arc::clone(&shared.clock),
        });
        open.watches.insert(id, Arc::clone(&watch));
        Ok(Slot {
            shared: Arc::clone(shared),
            id,
            address,
            watch,
        })
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        let open = self
            .shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.watches.len()
    }
}

/// IPv4 addresses count one by one; IPv6 ones by /64, the smallest network a host is given.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

/// Answers a refused connection with a 503 problem and closes it, without reading its request:
/// the client learns at once, and the descriptor is free again. Written without waiting: a new
/// socket's send buffer has room for a few hundred bytes, and if not, closing is answer enough.
pub fn refuse(stream: TcpStream) {
    let id = crate::front::new_request_id();
    let id = id.to_str().unwrap_or("req_unknown");
    let problem = ApiError::new(
        ProblemCode::Unavailable,
        "the server holds as many connections as it may; retry later",
    )
    .problem(id);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nretry-after: 1\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let _ = stream.try_write(&response);
}

/// A connection's place among the open ones; given back when dropped.
pub struct Slot {
    shared: Arc<Shared>,
    id: u64,
    /// The address it counts against, unless exempt.
    address: Option<IpAddr>,
    watch: Arc<Watch>,
}

impl Slot {
    /// The connection's socket, watched for its deadlines.
    pub fn watch(&self, stream: TcpStream) -> Watched {
        Watched {
            stream,
            watch: Arc::clone(&self.watch),
        }
    }

    /// An HTTP/2 connection carries many requests at once, so it has no phases between them:
    /// from its start it is held to the idle timeout alone, closed once no byte has moved either
    /// way for that long.
    pub fn multiplexed(&self) {
        self.watch.enter(BUSY, self.watch.clock.idle_ms);
    }

    /// `service` for this connection, telling the watch when a request begins and ends.
    pub fn service<S>(&self, service: S) -> Tracked<S> {
        Tracked {
            service,
            watch: Arc::clone(&self.watch),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.watches.remove(&self.id);
        if let Some(address) = self.address
            && let Some(held) = open.by_address.get_mut(&address)
        {
            *held -= 1;
            if *held == 0 {
                open.by_address.remove(&address);
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the server started, as of the last sweep.
struct Clock {
    started: Instant,
    now_ms: AtomicU64,
    header_read_ms: u64,
    idle_ms: u64,
}

impl Clock {
    /// Reads the time; the clock never goes back, whoever advances it.
    fn advance(&self) -> u64 {
        let now = millis(self.started.elapsed());
        self.now_ms.fetch_max(now, Relaxed);
        now
    }

    fn deadline(&self, after_ms: u64) -> u64 {
        self.now_ms.load(Relaxed).saturating_add(after_ms) & DEADLINE_MASK
    }
}

// A connection's state word: its deadline (ms on the clock) shifted left by two, and its phase.
/// Waiting for (or reading) a request's head; the deadline does not move.
const HEAD: u64 = 0;
/// A request is being served; the deadline moves with every byte read or written.
const BUSY: u64 = 1;
/// The response is out; waiting for the next request.
const IDLE: u64 = 2;
/// Past its deadline: the connection's next read or write fails, and it closes.
const EXPIRED: u64 = 3;
const PHASE: u64 = 3;
const DEADLINE_MASK: u64 = u64::MAX >> 2;

fn pack(phase: u64, deadline: u64) -> u64 {
    (deadline << 2) | phase
}

/// What the sweep and the connection share: its state word and the waker of its task.
pub struct Watch {
    state: AtomicU64,
    waker: AtomicWaker,
    clock: Arc<Clock>,
}

impl Watch {
    fn expired(&self) -> bool {
        self.state.load(Relaxed) == EXPIRED
    }

    /// Moves to `phase` with a deadline `after_ms` from now, unless already expired. (Should
    /// the sweep expire it between the load and the store, the store wins: the connection was
    /// on time by a hair, and goes on.)
    fn enter(&self, phase: u64, after_ms: u64) {
        let state = self.state.load(Relaxed);
        let next = pack(phase, self.clock.deadline(after_ms));
        if state != EXPIRED && state != next {
            self.state.store(next, Relaxed);
        }
    }

    /// Bytes came in: the start of the next request's head if the connection was idle, progress
    /// if a request (its body) is being read.
    fn read_some(&self) {
        match self.state.load(Relaxed) & PHASE {
            IDLE => self.enter(HEAD, self.clock.header_read_ms),
            BUSY => self.enter(BUSY, self.clock.idle_ms),
            _ => {}
        }
    }

    fn wrote_some(&self) {
        if self.state.load(Relaxed) & PHASE == BUSY {
            self.enter(BUSY, self.clock.idle_ms);
        }
    }

    fn expire_if_overdue(&self, now: u64) {
        let state = self.state.load(Relaxed);
        if state != EXPIRED
            && state >> 2 <= now
            && self
                .state
                .compare_exchange(state, EXPIRED, Relaxed, Relaxed)
                .is_ok()
        {
            self.waker.wake();
        }
    }

    /// The socket has nothing to give or take now: wake this task if the deadline passes first.
    fn pending<T>(&self, cx: &Context<'_>) -> Poll<io::Result<T>> {
        self.waker.register(cx.waker());
        if self.expired() {
            return Poll::Ready(Err(timed_out()));
        }
        Poll::Pending
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client was too slow sending its request, or idle too long",
    )
}

/// A connection's socket, failing its reads and writes once its deadline has passed.
pub struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.watch.expired() {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.watch.pending(cx),
            failed => failed,
        }
    }
}

impl Watched {
    fn wrote(&self, written: Poll<io::Result<usize>>, cx: &Context<'_>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.watch.wrote_some();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.watch.pending(cx),
            failed => failed,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.watch.expired() {
            return Poll::Ready(Err(timed_out()));
        }
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(written, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.watch.expired() {
            return Poll::Ready(Err(timed_out()));
        }
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A connection's service: marks the connection busy when hyper has a request's whole head,
/// and idle once the response's body is done with.
pub struct Tracked<S> {
    service: S,
    watch: Arc<Watch>,
}

impl<S, B> hyper::service::Service<hyper::Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
{
    type Response = hyper::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Responding<S::Future>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.watch.enter(BUSY, self.watch.clock.idle_ms);
        Responding {
            future: self.service.call(request),
            watch: Some(Arc::clone(&self.watch)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's response to come; its body carries the watch on.
    pub struct Responding<F> {
        #[pin]
        future: F,
        watch: Option<Arc<Watch>>,
    }
}

impl<F, B, E> Future for Responding<F>
where
    F: Future<Output = Result<hyper::Response<B>, E>>,
{
    type Output = Result<hyper::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let watch = this.watch.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody { body, watch })))
    }
}

/// A response body that marks its connection idle when hyper drops it (sent, or abandoned).
pub struct TrackedBody<B> {
    body: B,
    watch: Option<Arc<Watch>>,
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        if let Some(watch) = &self.watch {
            watch.enter(IDLE, watch.clock.idle_ms);
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Lets one line through a second, counting the ones held back for the next: a failure that
/// repeats (accept failing for want of descriptors, connections refused) is logged, not
/// flooded.
#[derive(Debug, Default)]
pub struct OncePerSecond {
    last: Option<Instant>,
    suppressed: u64,
}

impl OncePerSecond {
    /// At `now`: `Some(lines held back since the last one let through)`, or `None` to hold
    /// this one back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, exempt: &[&str]) -> Limits {
        Limits {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(125),
            max_connections: max,
            exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn the_cap_is_lowered_to_what_the_open_files_allow() {
        let mut config = Config::default();
        let (limits, lowered) = Limits::new(&config, Some(1024));
        // 1024 less 64 and three per pooled store connection (16 by default).
        assert_eq!(limits.max_connections, 1024 - 64 - 48);
        assert_eq!(lowered, Some(10_000));
        assert_eq!(limits.per_address(), 228);
        let (limits, lowered) = Limits::new(&config, Some(1 << 20));
        assert_eq!((limits.max_connections, lowered), (10_000, None));
        let (limits, _) = Limits::new(&config, None);
        assert_eq!(limits.max_connections, 10_000);
        let (limits, _) = Limits::new(&config, Some(10));
        assert_eq!(limits.max_connections, 1, "never none at all");
        config.server.max_connections = 3;
        let (limits, lowered) = Limits::new(&config, Some(1024));
        assert_eq!(
            (limits.max_connections, limits.per_address(), lowered),
            (3, 1, None)
        );
    }

    #[test]
    fn the_sweep_ticks_a_tenth_of_the_shorter_timeout_within_bounds() {
        let mut limits = limits(10, &[]);
        assert_eq!(limits.tick(), Duration::from_millis(500));
        limits.header_read = Duration::from_millis(300);
        assert_eq!(limits.tick(), Duration::from_millis(30));
        limits.idle = Duration::from_millis(50);
        assert_eq!(limits.tick(), Duration::from_millis(10));
    }

    #[tokio::test]
    async fn one_address_holds_a_share_and_everyone_the_cap() {
        let connections = Connections::new(limits(8, &["10.0.0.0/8"]));
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<Slot> = (0..2).map(|_| connections.admit(one).unwrap()).collect();
        assert_eq!(connections.admit(one).err(), Some(Refusal::AddressShare(2)));
        // A v6 host is its /64; the v4-mapped form of an address is that address.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = connections.admit(v6("2001:db8::1")).unwrap();
        let _b = connections.admit(v6("2001:db8::ffff:2")).unwrap();
        assert!(connections.admit(v6("2001:db8::3")).is_err());
        assert!(connections.admit(v6("::ffff:192.0.2.1")).is_err());
        // A trusted proxy may take the rest.
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let from_proxy: Vec<Slot> = (0..4).map(|_| connections.admit(proxy).unwrap()).collect();
        assert_eq!(connections.open(), 8);
        assert_eq!(connections.admit(proxy).err(), Some(Refusal::Full(8)));
        drop(from_proxy);
        drop(held);
        assert_eq!(connections.open(), 2);
        let _again = connections.admit(one).unwrap();
    }

    #[test]
    fn phases_move_the_deadline_as_documented() {
        let connections = Connections::new(limits(4, &[]));
        let slot = connections.admit("192.0.2.1".parse().unwrap()).unwrap();
        let watch = &slot.watch;
        let clock = &connections.shared.clock;
        let state = || watch.state.load(Relaxed);
        // Opened: a head is due within the header-read timeout (plus a tick).
        let opened = clock.now_ms.load(Relaxed);
        assert!(opened < 1_000);
        assert_eq!(state(), pack(HEAD, opened + 10_500));
        clock.now_ms.store(1_000, Relaxed);
        watch.read_some();
        assert_eq!(
            state(),
            pack(HEAD, opened + 10_500),
            "a slow head gains nothing by trickling"
        );
        watch.enter(BUSY, clock.idle_ms);
        assert_eq!(state(), pack(BUSY, 126_500));
        clock.now_ms.store(2_000, Relaxed);
        watch.wrote_some();
        assert_eq!(
            state(),
            pack(BUSY, 127_500),
            "progress keeps a request going"
        );
        watch.enter(IDLE, clock.idle_ms);
        clock.now_ms.store(3_000, Relaxed);
        watch.wrote_some();
        assert_eq!(state(), pack(IDLE, 127_500));
        watch.read_some();
        assert_eq!(
            state(),
            pack(HEAD, 13_500),
            "the next head is timed from its first byte"
        );

        watch.expire_if_overdue(13_499);
        assert!(!watch.expired());
        watch.expire_if_overdue(13_500);
        assert!(watch.expired());
        watch.read_some();
        watch.enter(BUSY, clock.idle_ms);
        assert!(watch.expired(), "expired for good");
    }

    #[test]
    fn once_per_second_counts_what_it_held_back() {
        let mut log = OncePerSecond::default();
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(log.admit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.admit(start + Duration::from_millis(1000)), Some(3));
        assert_eq!(log.admit(start + Duration::from_millis(1001)), None);
        assert_eq!(log.admit(start + Duration::from_secs(5)), Some(1));
    }
}
