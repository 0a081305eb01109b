//! Writes log lines off the request path: requests append a line to a bounded buffer without
//! waiting, and one thread per log writes them in batches. A full buffer or a failing write
//! (full disk, closed stdout, read-only file) drops lines and counts them; nothing blocks.

use crate::telemetry::{DropReason, Telemetry};
use log::{info, warn};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// Bytes waiting to be written before new lines are dropped (about 10,000 lines).
pub const MAX_PENDING: usize = 4 << 20;
/// How long a line may wait before the writer thread writes it.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Pending bytes that wake the writer before `FLUSH_EVERY` (so a burst never fills the buffer).
const WAKE_AT: usize = 256 << 10;
/// A buffer that grew past this during a burst or a slow disk is given back after its batch is
/// written: the writer lives as long as its log (it is reused across reloads), and a Vec never
/// shrinks by itself, so one stall would otherwise pin up to `2 * MAX_PENDING` for good.
const KEEP_CAPACITY: usize = 2 * WAKE_AT;

/// Where lines go.
pub enum Sink {
    Stdout,
    File(File),
}

impl Sink {
    /// `stdout`, or a file opened for appending (created if missing); a relative path is
    /// relative to `base` (the config file's directory).
    pub fn open(path: &str, base: &Path) -> Result<(Sink, String), String> {
        if path == "stdout" {
            return Ok((Sink::Stdout, "stdout".into()));
        }
        if path.trim().is_empty() {
            return Err("`path` is empty (write `stdout` or a file path)".into());
        }
        let full: PathBuf = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            base.join(path)
        };
        let shown = full.display().to_string();
        let mut opts = OpenOptions::new();
        opts.append(true).create(true);
        match std::fs::metadata(&full) {
            Ok(m) if m.is_dir() => return Err(format!("`{shown}` is a directory")),
            // Opening a FIFO without a reader would wait for one forever.
            Ok(m) if m.file_type().is_fifo() => {
                opts.custom_flags(libc::O_NONBLOCK);
            }
            _ => {}
        }
        match opts.open(&full) {
            Ok(f) => Ok((Sink::File(f), shown)),
            Err(e) => Err(format!("cannot open `{shown}` for writing: {e}")),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout => io::stdout().lock().write(buf),
            Sink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout => io::stdout().lock().flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

/// Where the writer thread writes.
pub type Output = Box<dyn Write + Send>;

/// Lines handed over by requests, not yet taken by the writer thread.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    lines: u64,
    /// Whether the writer was already woken for this batch.
    woken: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    closed: AtomicBool,
}

/// One log's buffer and writer thread. A request appends its line under a short lock and
/// never wakes anyone (a wake-up per line costs a futex call and a context switch): the
/// writer takes the whole batch every `FLUSH_EVERY`, or sooner when `WAKE_AT` bytes wait.
/// The thread starts with the first line, so it is born after Pingora daemonizes (a thread
/// does not survive `fork`), and `anygate check` starts none.
pub struct LogWriter {
    name: String,
    sink: Mutex<Option<Output>>,
    shared: Arc<Shared>,
    thread: OnceLock<Option<Thread>>,
    telemetry: Arc<Telemetry>,
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogWriter {
    pub fn new(sink: Output, name: String, telemetry: Arc<Telemetry>) -> LogWriter {
        LogWriter {
            name,
            sink: Mutex::new(Some(sink)),
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending::default()),
                closed: AtomicBool::new(false),
            }),
            thread: OnceLock::new(),
            telemetry,
        }
    }

    /// Hands over one line (with its `\n`); never waits for I/O.
    pub fn write(&self, line: &[u8]) {
        let Some(thread) = self.thread.get_or_init(|| self.spawn()) else {
            self.telemetry.dropped(DropReason::WriteError, 1);
            return;
        };
        let mut p = lock(&self.shared.pending);
        if p.buf.len() + line.len() > MAX_PENDING {
            drop(p);
            self.telemetry.dropped(DropReason::QueueFull, 1);
            return;
        }
        p.buf.extend_from_slice(line);
        p.lines += 1;
        if p.buf.len() >= WAKE_AT && !p.woken {
            p.woken = true;
            drop(p);
            thread.unpark();
        }
    }

    fn spawn(&self) -> Option<Thread> {
        let sink = self.sink.lock().ok()?.take()?;
        let mut out = Batch::new(sink, self.name.clone(), self.telemetry.clone());
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || out.run(&shared));
        match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                warn!(
                    "access log {}: cannot start its writer thread ({e}); lines are dropped",
                    self.name
                );
                None
            }
        }
    }
}

impl Drop for LogWriter {
    /// The plugin is gone (a reload rebuilt it): the writer writes what is left and ends.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(Some(t)) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The writer thread's state.
struct Batch {
    sink: Output,
    name: String,
    telemetry: Arc<Telemetry>,
    buf: Vec<u8>,
    lines: u64,
    /// Whether the last write failed (warn once per failure streak).
    failing: bool,
    /// Whether a failed write left half a line behind (end it before the next one).
    torn: bool,
}

impl Batch {
    fn new(sink: Output, name: String, telemetry: Arc<Telemetry>) -> Batch {
        Batch {
            sink,
            name,
            telemetry,
            buf: Vec::with_capacity(WAKE_AT),
            lines: 0,
            failing: false,
            torn: false,
        }
    }

    fn run(&mut self, shared: &Shared) {
        loop {
            std::thread::park_timeout(FLUSH_EVERY);
            let closed = shared.closed.load(Ordering::Acquire);
            self.take(shared);
            self.flush();
            self.trim();
            if closed {
                return;
            }
        }
    }

    /// Takes what requests handed over. The lock is held for a pointer swap, not for the write.
    fn take(&mut self, shared: &Shared) {
        let mut p = lock(&shared.pending);
        std::mem::swap(&mut p.buf, &mut self.buf);
        self.lines = std::mem::take(&mut p.lines);
        p.woken = false;
    }

    /// Writes the buffer; lines that did not make it are counted as dropped.
    fn flush(&mut self) {
        if self.lines == 0 {
            return;
        }
        if self.torn {
            self.buf.insert(0, b'\n');
        }
        let (written, result) = write_some(&mut self.sink, &self.buf);
        match result {
            Ok(()) => {
                self.torn = false;
                if self.failing {
                    info!("access log {}: writing again", self.name);
                    self.failing = false;
                }
            }
            Err(e) => {
                let done = self.buf[..written].iter().filter(|&&b| b == b'\n').count() as u64;
                let done = done.saturating_sub(u64::from(self.torn));
                self.telemetry
                    .dropped(DropReason::WriteError, self.lines.saturating_sub(done));
                self.torn = written > 0 && self.buf.get(written - 1) != Some(&b'\n');
                if !self.failing {
                    warn!(
                        "access log {}: cannot write ({e}); dropping lines until it works again (anygate_access_log_dropped_total)",
                        self.name
                    );
                    self.failing = true;
                }
            }
        }
        self.buf.clear();
        self.lines = 0;
    }

    /// Gives back a buffer a burst grew. Both buffers pass through here (they are swapped
    /// every round), so both shrink.
    fn trim(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::with_capacity(WAKE_AT);
        }
    }
}

/// Like `write_all`, but says how much got through before an error.
fn write_some(w: &mut impl Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut off = 0;
    while off < buf.len() {
        match w.write(&buf[off..]) {
            Ok(0) => return (off, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (off, Err(e)),
        }
    }
    (off, w.flush())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Accepts `room` bytes, then fails like a full disk.
    struct Full {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_some_reports_what_got_through() {
        let mut w = Full {
            room: 5,
            got: Vec::new(),
        };
        let (n, r) = write_some(&mut w, b"abc\ndef\n");
        assert_eq!(n, 5);
        assert!(r.is_err());
        assert_eq!(w.got, b"abc\nd");
    }

    #[test]
    fn a_failing_file_counts_every_line_it_lost() {
        let t = Arc::new(Telemetry::new().unwrap());
        let (sink, name) = Sink::open("/dev/full", Path::new("/")).unwrap();
        let mut b = Batch::new(Box::new(sink), name, t.clone());
        for _ in 0..3 {
            b.buf.extend_from_slice(b"{}\n");
            b.lines += 1;
        }
        b.flush();
        assert!(b.failing);
        let dropped = t
            .access_log_dropped
            .with_label_values(&["write_error"])
            .get();
        assert_eq!(dropped, 3);
    }

    /// Whether the gate is open, and what got through.
    type GateState = Mutex<(bool, Vec<u8>)>;

    /// Blocks every write until the test opens it (at most 20 s), then keeps the bytes.
    #[derive(Clone, Default)]
    struct Gate {
        state: Arc<(GateState, std::sync::Condvar)>,
    }

    impl Gate {
        fn open(&self) {
            self.state.0.lock().unwrap().0 = true;
            self.state.1.notify_all();
        }
        fn lines(&self) -> usize {
            self.state
                .0
                .lock()
                .unwrap()
                .1
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.state;
            let g = lock.lock().unwrap();
            let (mut g, _) = cv
                .wait_timeout_while(g, Duration::from_secs(20), |s| !s.0)
                .unwrap();
            g.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_writer_never_blocks_and_every_line_is_written_or_counted() {
        let t = Arc::new(Telemetry::new().unwrap());
        let gate = Gate::default();
        let w = LogWriter::new(Box::new(gate.clone()), "gate".into(), t.clone());
        let line = br#"{"a line":"of about fifty bytes, give or take"}"#.to_vec();
        const SENT: usize = 400_000;
        let line = [line.as_slice(), b"\n"].concat();
        for _ in 0..SENT {
            w.write(&line);
        }
        // The writer holds at most one batch being written and a full buffer: the rest was
        // dropped.
        let full = |t: &Telemetry| {
            t.access_log_dropped
                .with_label_values(&["queue_full"])
                .get()
        };
        let held = 2 * (MAX_PENDING / line.len()) + 2;
        assert!(full(&t) as usize >= SENT - held, "dropped {}", full(&t));
        gate.open();
        let deadline = Instant::now() + Duration::from_secs(20);
        while gate.lines() + (full(&t) as usize) < SENT {
            assert!(Instant::now() < deadline, "{} written", gate.lines());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(gate.lines() + full(&t) as usize, SENT);
        assert_eq!(
            t.access_log_dropped
                .with_label_values(&["write_error"])
                .get(),
            0
        );
    }

    #[test]
    fn buffers_grown_by_a_stall_are_given_back() {
        let t = Arc::new(Telemetry::new().unwrap());
        let shared = Shared {
            pending: Mutex::new(Pending::default()),
            closed: AtomicBool::new(false),
        };
        let mut b = Batch::new(Box::new(io::sink()), "sink".into(), t);
        let hand_over = |bytes: usize| {
            let mut p = lock(&shared.pending);
            p.buf.extend(std::iter::repeat_n(b'x', bytes - 1));
            p.buf.push(b'\n');
            p.lines += 1;
        };
        // A slow disk: requests piled up most of `MAX_PENDING` before the writer came back.
        hand_over(MAX_PENDING - 1000);
        b.take(&shared);
        hand_over(MAX_PENDING / 2);
        b.flush();
        b.trim();
        // Then ordinary rounds, a line or none each: the writer's run loop.
        for round in 0..4 {
            if round % 2 == 0 {
                hand_over(200);
            }
            b.take(&shared);
            b.flush();
            b.trim();
        }
        let waiting = lock(&shared.pending).buf.capacity();
        let writing = b.buf.capacity();
        assert!(
            waiting <= KEEP_CAPACITY && writing <= KEEP_CAPACITY,
            "buffers still hold {waiting} and {writing} bytes"
        );
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        let dir = std::env::temp_dir();
        let e = Sink::open(dir.to_str().unwrap(), Path::new("/"))
            .err()
            .unwrap();
        assert!(e.contains("is a directory"), "{e}");
        let e = Sink::open("no/such/dir/x.log", Path::new("/nonexistent-anygate"))
            .err()
            .unwrap();
        assert!(
            e.contains("/nonexistent-anygate/no/such/dir/x.log") && e.contains("No such file"),
            "{e}"
        );
        assert!(Sink::open(" ", Path::new("/")).is_err());
    }
}
