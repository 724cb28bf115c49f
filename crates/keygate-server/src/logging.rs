//! Where log lines go, and the access log's line per request.
//!
//! At the default level every request writes a line. Made through tracing, that line cost a span
//! (its fields formatted into a new string), an event formatted with the span's context, a copy
//! into a queue and a `write` per line: a fifth of forward-auth's throughput. Here the access line
//! is formatted straight into a shared buffer, under a lock held for that copy only, in the very
//! shape tracing's formatter gives it (text or JSON: what reads the log reads it as before), and
//! a thread of its own writes the whole buffer at once: one system call per batch, and no
//! allocation per request once the two buffers have grown.
//!
//! tracing's own lines (everything but the access log) pass through the same buffer, so lines
//! never interleave, and are written at once; access lines wait for the next batch, at most
//! [`BATCH_PAUSE`]. Nothing is dropped: when the writer falls [`MAX_PENDING`] bytes behind,
//! requests wait for it. Dropping the [`Flush`] guard writes what is left.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// The longest an access line waits in the buffer.
pub const BATCH_PAUSE: Duration = Duration::from_millis(50);
/// A batch this large is written without waiting for the pause to end.
const BATCH_BYTES: usize = 64 * 1024;
/// How far the writer may fall behind before requests wait for it: some 200 000 lines, so a
/// reader of stderr that pauses for a while (or a test that reads it only at the end) stops
/// nothing.
pub const MAX_PENDING: usize = 32 * 1024 * 1024;
/// A buffer grown past this by a backlog is given back once written.
const KEPT_CAPACITY: usize = 4 * BATCH_BYTES;
/// How long the last lines may take to be written when the process ends: a stderr nobody reads
/// must not keep it from ending.
const LAST_WRITE: Duration = Duration::from_secs(2);

/// The process's log output, once [`LogSink::install`] made it.
static INSTALLED: OnceLock<LogSink> = OnceLock::new();

/// A buffer in front of an output, written by a thread of its own.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
    format: LogFormat,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits on it for the pause, or until a line asks for a write now.
    wake: Condvar,
    /// Loggers wait on it while the buffer is full.
    drained: Condvar,
}

#[derive(Default)]
struct Pending {
    buffer: Vec<u8>,
    /// A line asked to be written now (tracing's, or a full batch).
    write_now: bool,
    writer_waiting: bool,
    closed: bool,
    /// The writer wrote the last line and stopped.
    finished: bool,
}

/// Stops the writer when dropped, once everything logged is written (or [`LAST_WRITE`] passed).
pub struct Flush {
    sink: LogSink,
}

impl LogSink {
    /// A sink writing to `output` from a new thread, lines formatted as `format`, access lines
    /// at least every `pause` ([`BATCH_PAUSE`] but in tests).
    pub fn start(
        output: impl Write + Send + 'static,
        format: LogFormat,
        pause: Duration,
    ) -> (Self, Flush) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            drained: Condvar::new(),
        });
        let writer = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name("keygate-log".into())
            .spawn(move || write_batches(&writer, output, pause));
        if started.is_err() {
            // No thread, no writer: nothing to wait for, and nothing would ever drain a buffer.
            let mut pending = lock(&shared.pending);
            pending.closed = true;
            pending.finished = true;
        }
        let sink = Self { shared, format };
        let flush = Flush { sink: sink.clone() };
        (sink, flush)
    }

    /// Makes this the sink [`access`] writes to. The first call wins.
    pub fn install(&self) {
        let _ = INSTALLED.set(self.clone());
    }

    /// Appends what `write` puts in the buffer; `now` asks for it to be written without waiting
    /// for the batch. Waits while the writer is [`MAX_PENDING`] bytes behind.
    fn append(&self, now: bool, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = lock(&self.shared.pending);
        if pending.finished {
            return;
        }
        while pending.buffer.len() >= MAX_PENDING && !pending.closed {
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        write(&mut pending.buffer);
        if (now || pending.buffer.len() >= BATCH_BYTES) && !pending.write_now {
            pending.write_now = true;
            if pending.writer_waiting {
                self.shared.wake.notify_one();
            }
        }
    }

    /// Appends the access line of one answered request.
    pub fn access(&self, line: &AccessLine<'_>) {
        // The wall clock, as tracing stamps its own lines: a test's clock must not move the log's.
        #[allow(clippy::disallowed_methods)]
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let format = self.format;
        self.append(false, |buffer| line.write(buffer, at, format));
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // A panic while appending leaves at worst a partial line; the buffer is still a buffer.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: waits for the pause (or a line wanting out now), takes the whole buffer in
/// exchange for its emptied spare, and writes it with the lock released.
fn write_batches(shared: &Shared, mut output: impl Write, pause: Duration) {
    let mut batch = Vec::new();
    loop {
        let mut pending = lock(&shared.pending);
        if !pending.write_now && !pending.closed {
            pending.writer_waiting = true;
            pending = shared
                .wake
                .wait_timeout_while(pending, pause, |p| !p.write_now && !p.closed)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            pending.writer_waiting = false;
        }
        pending.write_now = false;
        std::mem::swap(&mut pending.buffer, &mut batch);
        let closed = pending.closed;
        drop(pending);
        shared.drained.notify_all();
        if !batch.is_empty() {
            // Nowhere to report a failing stderr; the lines are lost, the server goes on.
            let _ = output.write_all(&batch).and_then(|()| output.flush());
            batch.clear();
            batch.shrink_to(KEPT_CAPACITY);
        }
        if closed {
            let mut pending = lock(&shared.pending);
            if pending.buffer.is_empty() {
                pending.finished = true;
                shared.drained.notify_all();
                return;
            }
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        let shared = &self.sink.shared;
        let mut pending = lock(&shared.pending);
        pending.closed = true;
        shared.wake.notify_one();
        shared.drained.notify_all();
        let _ = shared
            .drained
            .wait_timeout_while(pending, LAST_WRITE, |p| !p.finished);
    }
}

/// tracing's lines: one `write_all` per event, written at once.
impl Write for &LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(true, |buffer| buffer.extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = &'a LogSink;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The installed sink, if the access log is on: a sink installed and level `info` enabled for
/// the target its lines name (so `log.level` and `RUST_LOG` decide, as for any line, and
/// `RUST_LOG=info,keygate_server::front=warn` turns the access log off alone, as it always did).
pub fn access_log() -> Option<&'static LogSink> {
    INSTALLED
        .get()
        .filter(|_| tracing::enabled!(target: TARGET, tracing::Level::INFO))
}

/// One answered request, as the access log records it: never the query or a header, which may
/// carry credentials.
pub struct AccessLine<'a> {
    pub id: &'a str,
    pub ip: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub micros: u128,
}

/// The target tracing would have named: the line was an event of the front service.
const TARGET: &str = "keygate_server::front";

impl AccessLine<'_> {
    /// The line tracing's formatter writes for the event `served` (status, micros) in the span
    /// `request` (id, ip, method, path), at `at` since the epoch. Written piece by piece, not
    /// through `write!`: the formatting machinery was 2 500 instructions of every request's
    /// 3 300 at the default level (an IPv4 address alone, 950). Writes to a `Vec` cannot fail.
    fn write(&self, out: &mut Vec<u8>, at: Duration, format: LogFormat) {
        let Self {
            id,
            ip,
            method,
            path,
            status,
            micros,
        } = self;
        match format {
            LogFormat::Text => {
                write_timestamp(out, at);
                out.extend_from_slice(b"  INFO request{id=");
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(b" ip=");
                write_ip(out, *ip);
                out.extend_from_slice(b" method=");
                out.extend_from_slice(method.as_bytes());
                out.extend_from_slice(b" path=");
                if plain(path) {
                    out.push(b'"');
                    out.extend_from_slice(path.as_bytes());
                    out.push(b'"');
                } else {
                    let _ = write!(out, "{path:?}");
                }
                out.extend_from_slice(b"}: ");
                out.extend_from_slice(TARGET.as_bytes());
                out.extend_from_slice(b": served status=");
                write_number(out, *status);
                out.extend_from_slice(b" micros=");
                write_number(out, u64::try_from(*micros).unwrap_or(u64::MAX));
                out.push(b'\n');
            }
            LogFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                write_timestamp(out, at);
                out.extend_from_slice(
                    b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"served\",\"status\":",
                );
                write_number(out, *status);
                out.extend_from_slice(b",\"micros\":");
                write_number(out, u64::try_from(*micros).unwrap_or(u64::MAX));
                out.extend_from_slice(b"},\"target\":\"");
                out.extend_from_slice(TARGET.as_bytes());
                out.extend_from_slice(b"\",\"span\":");
                let span_start = out.len();
                out.extend_from_slice(b"{\"id\":\"");
                json_string_body(out, id);
                out.extend_from_slice(b"\",\"ip\":\"");
                write_ip(out, *ip);
                out.extend_from_slice(b"\",\"method\":\"");
                json_string_body(out, method);
                out.extend_from_slice(b"\",\"path\":\"");
                json_string_body(out, path);
                out.extend_from_slice(b"\",\"name\":\"request\"}");
                let span_end = out.len();
                out.extend_from_slice(b",\"spans\":[");
                out.extend_from_within(span_start..span_end);
                out.extend_from_slice(b"]}\n");
            }
        }
    }
}

fn write_number(out: &mut Vec<u8>, number: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

/// An address as `Display` writes it; IPv4's dotted quad without the formatting machinery.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_number(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Printable ASCII without a quote or backslash: written as it is, in text and in JSON.
fn plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `text` as the inside of a JSON string.
fn json_string_body(out: &mut Vec<u8>, text: &str) {
    if plain(text) {
        out.extend_from_slice(text.as_bytes());
    } else if let Ok(quoted) = serde_json::to_vec(text) {
        out.extend_from_slice(&quoted[1..quoted.len() - 1]);
    }
}

/// RFC 3339 in UTC with microseconds, as tracing's formatter writes it: the date and time of day
/// are worked out once per second per thread.
fn write_timestamp(out: &mut Vec<u8>, at: Duration) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let seconds = at.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != seconds {
        text = date_time(seconds);
        SECOND.set((seconds, text));
    }
    out.extend_from_slice(&text);
    let mut fraction = *b".000000Z";
    let mut micros = at.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&fraction);
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn date_time(seconds: u64) -> [u8; 19] {
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut text = [0u8; 19];
    let mut cursor = &mut text[..];
    let _ = write!(
        cursor,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// An output that keeps what is written.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Kept {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl<'a> MakeWriter<'a> for Kept {
        type Writer = Kept;
        fn make_writer(&'a self) -> Kept {
            self.clone()
        }
    }

    /// Lines of every shape: IPv4 and IPv6, a path to quote and plain ones, numbers of one
    /// digit and many.
    const LINES: [AccessLine<'static>; 3] = [
        AccessLine {
            id: "req_abc123",
            ip: IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)),
            method: "GET",
            path: "/v1/forward-auth/zones/\"1\"",
            status: 200,
            micros: 42,
        },
        AccessLine {
            id: "req_0000000000000000000z",
            ip: IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            method: "POST",
            path: "/v1/verify",
            status: 401,
            micros: 0,
        },
        AccessLine {
            id: "caller-chosen.id:7",
            ip: IpAddr::V4(std::net::Ipv4Addr::new(0, 10, 255, 100)),
            method: "DELETE",
            path: "/v1/tokens/tok_1 2",
            status: 503,
            micros: 18_446_744_073_709,
        },
    ];

    /// What tracing's own formatter writes for the same event in the same span, without the
    /// timestamp, with the target the front's event had.
    fn by_tracing(line: &AccessLine, format: LogFormat) -> String {
        let kept = Kept::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(kept.clone())
            .with_ansi(false)
            .without_time();
        let dispatch = match format {
            LogFormat::Text => tracing::Dispatch::new(builder.finish()),
            LogFormat::Json => tracing::Dispatch::new(builder.json().finish()),
        };
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!(target: "keygate_server::front", "request",
                id = %line.id, ip = %line.ip, method = %line.method, path = line.path);
            let _entered = span.enter();
            // As a u64: tracing's JSON wrote the u128 the front used to log as a string, "42";
            // the line now carries the number.
            let micros = line.micros as u64;
            tracing::info!(target: "keygate_server::front", status = line.status, micros, "served");
        });
        kept.text()
    }

    #[test]
    fn the_access_line_is_the_one_tracing_wrote_in_text() {
        for line in &LINES {
            let mut ours = Vec::new();
            line.write(
                &mut ours,
                Duration::new(1_764_762_822, 123_456_789),
                LogFormat::Text,
            );
            let ours = String::from_utf8(ours).unwrap();
            let (timestamp, rest) = ours.split_at(27);
            assert_eq!(timestamp, "2025-12-03T11:53:42.123456Z");
            // tracing pads the level after its timestamp; without one, the line starts at the
            // level.
            assert_eq!(
                rest.trim_start(),
                by_tracing(line, LogFormat::Text).trim_start()
            );
        }
    }

    #[test]
    fn the_access_line_is_the_one_tracing_wrote_in_json() {
        for line in &LINES {
            let mut ours = Vec::new();
            line.write(
                &mut ours,
                Duration::new(1_764_762_822, 5_000),
                LogFormat::Json,
            );
            let mut ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
            assert_eq!(
                ours.as_object_mut().unwrap().remove("timestamp").unwrap(),
                "2025-12-03T11:53:42.000005Z"
            );
            let theirs: serde_json::Value =
                serde_json::from_str(&by_tracing(line, LogFormat::Json)).unwrap();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn timestamps_match_rfc_3339_across_days_and_years() {
        for seconds in [0, 951_782_400, 1_704_067_199, 1_709_164_800, 4_102_444_800] {
            let mut ours = Vec::new();
            write_timestamp(&mut ours, Duration::from_secs(seconds));
            let expected = time::OffsetDateTime::from_unix_timestamp(seconds as i64)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            // time writes no fraction for a whole second.
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                expected.replace('Z', ".000000Z")
            );
        }
    }

    #[test]
    fn lines_are_written_in_order_and_all_of_them_at_the_end() {
        let kept = Kept::default();
        let (sink, flush) = LogSink::start(kept.clone(), LogFormat::Text, BATCH_PAUSE);
        for i in 0..10_000u32 {
            let path = format!("/v1/things/{i}");
            sink.access(&AccessLine {
                path: &path,
                ..LINES[0]
            });
            if i % 1000 == 0 {
                let _ = (&sink).write_all(format!("tracing line {i}\n").as_bytes());
            }
        }
        drop(flush);
        let text = kept.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_010);
        let mut next = 0;
        for line in lines {
            if let Some(i) = line.strip_prefix("tracing line ") {
                assert_eq!(i.parse::<u32>().unwrap() + 1, next);
            } else {
                assert!(
                    line.contains(&format!("path=\"/v1/things/{next}\"")),
                    "{line}"
                );
                next += 1;
            }
        }
    }

    #[test]
    fn a_tracing_line_is_written_at_once_and_access_lines_with_the_batch() {
        let kept = Kept::default();
        // A pause longer than the test: only a line asking to be written now is.
        let (sink, flush) =
            LogSink::start(kept.clone(), LogFormat::Text, Duration::from_secs(3600));
        sink.access(&LINES[0]);
        (&sink).write_all(b"urgent\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !kept.text().contains("urgent") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The access line went with it, in order.
        let text = kept.text();
        assert!(text.ends_with("micros=42\nurgent\n"), "{text}");
        sink.access(&LINES[0]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            kept.text(),
            text,
            "an access line alone waits for the batch"
        );
        drop(flush);
        assert!(kept.text().ends_with("micros=42\n"));
    }
}
