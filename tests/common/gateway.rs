//! Spawns the real `anygate` binary on a rendered YAML config.
//!
//! Placeholders in config templates: `@HTTP@`, `@HTTPS@`, `@ADMIN@` become
//! `127.0.0.1:PORT` (distinct free ports picked by the harness) and `@DIR@`
//! the gateway's temp dir (config, logs, any files a test puts there).

use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long `start` waits for the gateway to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGINT before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `check` waits for `anygate check` to exit.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
const START_ATTEMPTS: usize = 5;

/// The gateway binary: `$ANYGATE_BIN` if set, else the `anygate` binary of
/// the package under test (`CARGO_BIN_EXE_anygate`, known at compile time).
pub fn anygate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ANYGATE_BIN") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    match option_env!("CARGO_BIN_EXE_anygate") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "no anygate binary: set ANYGATE_BIN, or run the tests from the package that builds the `anygate` binary"
        ),
    }
}

/// A free TCP port on `ip`, for a server a test starts (see [`free_ports`]).
pub fn free_port(ip: IpAddr) -> u16 {
    free_ports(ip, 1)[0]
}

/// `n` distinct free ports on `ip`, for servers a test starts.
///
/// They are picked below the kernel's ephemeral range (`ip_local_port_range`): the source
/// ports of the tests' own connections and the ports `bind(ip:0)` returns come from that
/// range, so a port found free there could be taken by one of them before the server meant
/// for it bound it (seen: Prometheus exiting with "address already in use"). Each port is
/// handed out once per test process, after a bind to it succeeded; the picks start at a
/// place that depends on the process id, so test processes run side by side (nextest) take
/// different ports. Without such a range (under 1,000 ports below it), `bind(ip:0)` picks.
pub fn free_ports(ip: IpAddr, n: usize) -> Vec<u16> {
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    while held.len() < n {
        let listener = match below_ephemeral() {
            Some((low, high)) => pick_below(ip, low, high),
            None => TcpListener::bind((ip, 0)),
        };
        held.push(listener.unwrap_or_else(|e| panic!("cannot find a free port on {ip}: {e}")));
    }
    held.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// The ports tests pick from: 10000 up to the start of the ephemeral range.
fn below_ephemeral() -> Option<(u16, u16)> {
    static RANGE: std::sync::OnceLock<Option<(u16, u16)>> = std::sync::OnceLock::new();
    *RANGE.get_or_init(|| {
        let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
        let first: u16 = text.split_whitespace().next()?.parse().ok()?;
        let low = 10_000;
        (first > low + 1_000).then_some((low, first - 1))
    })
}

/// The next port in `low..=high` (going round) that binds on `ip`, bound.
fn pick_below(ip: IpAddr, low: u16, high: u16) -> io::Result<TcpListener> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(high - low) + 1;
    // Seeded once from the process id: far apart for processes started one after another.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut last = None;
    for _ in 0..span.min(2_000) {
        let at = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = low + at as u16;
        match TcpListener::bind((ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port left to try")))
}

/// Substitutes the placeholders of `template`.
pub fn render_template(
    template: &str,
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    dir: &Path,
) -> String {
    template
        .replace("@HTTP@", &http.to_string())
        .replace("@HTTP_PORT@", &http.port().to_string())
        .replace("@HTTPS@", &https.to_string())
        .replace("@ADMIN@", &admin.to_string())
        .replace("@DIR@", &dir.display().to_string())
}

/// Polls until a TCP connect to `addr` succeeds or `timeout` passes.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Sends a signal (by name, e.g. `TERM`, `HUP`, `KILL`) with the `kill` command.
pub fn send_signal(pid: u32, sig: &str) -> io::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -{sig} {pid} failed: {st}")))
    }
}

/// Waits for `child` to exit, at most `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// A running gateway process; stopped (SIGINT, then SIGKILL) when dropped.
pub struct Gateway {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub https: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Gateway {
    /// Renders `yaml_template`, writes it and starts `anygate run -c FILE`.
    pub fn start(yaml_template: &str) -> Gateway {
        Gateway::start_with(yaml_template, &[])
    }

    /// Like [`Gateway::start`] with extra environment variables
    /// (`RUST_LOG` defaults to `info`).
    ///
    /// Waits until the http address accepts connections, and also the admin
    /// and https addresses if the template uses `@ADMIN@` / `@HTTPS@`.
    /// Retries with new ports (up to 5 attempts) if the process exits
    /// complaining about an address "in use"; otherwise panics with its output.
    pub fn start_with(yaml_template: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_full(yaml_template, env, &[])
    }

    /// Like [`Gateway::start_with`], with extra arguments after `run -c FILE`.
    pub fn start_full(yaml_template: &str, env: &[(&str, &str)], args: &[&str]) -> Gateway {
        Gateway::launch(yaml_template, env, args, false)
    }

    /// Like [`Gateway::start`], with stdout a pipe whose reading end is closed at once:
    /// every write to stdout fails (EPIPE). [`Gateway::stdout`] stays empty.
    pub fn start_with_closed_stdout(yaml_template: &str) -> Gateway {
        Gateway::launch(yaml_template, &[], &[], true)
    }

    /// Like [`Gateway::start_with`], on these ports (http, https, admin), in one attempt: for
    /// tests whose other processes must know the ports first (pebble's validator).
    pub fn start_at(yaml_template: &str, env: &[(&str, &str)], ports: [u16; 3]) -> Gateway {
        Gateway::launch_on(yaml_template, env, &[], false, Some(ports))
    }

    fn launch(
        yaml_template: &str,
        env: &[(&str, &str)],
        args: &[&str],
        closed_stdout: bool,
    ) -> Gateway {
        Gateway::launch_on(yaml_template, env, args, closed_stdout, None)
    }

    fn launch_on(
        yaml_template: &str,
        env: &[(&str, &str)],
        args: &[&str],
        closed_stdout: bool,
        fixed: Option<[u16; 3]>,
    ) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("anygate-test-")
            .tempdir()
            .expect("create temp dir");
        let bin = anygate_bin();
        let config = dir.path().join("anygate.yaml");
        let mut last_err = String::new();
        let attempts = if fixed.is_some() { 1 } else { START_ATTEMPTS };
        for attempt in 1..=attempts {
            let ports = match fixed {
                Some(p) => p.to_vec(),
                None => free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 3),
            };
            let (http, https, admin) = (loopback(ports[0]), loopback(ports[1]), loopback(ports[2]));
            let text = render_template(yaml_template, http, https, admin, dir.path());
            fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
            let out = File::create(dir.path().join("stdout.log")).expect("create stdout.log");
            let err = File::create(dir.path().join("stderr.log")).expect("create stderr.log");
            let mut cmd = Command::new(&bin);
            cmd.arg("run")
                .arg("-c")
                .arg(&config)
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
                cmd.env("RUST_LOG", "info");
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            if closed_stdout {
                cmd.stdout(Stdio::piped());
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
            drop(child.stdout.take());

            let mut wait_for = vec![("http", http)];
            if yaml_template.contains("@ADMIN@") {
                wait_for.push(("admin", admin));
            }
            if yaml_template.contains("@HTTPS@") {
                wait_for.push(("https", https));
            }
            match wait_started(&mut child, dir.path(), &wait_for) {
                Ok(()) => {
                    return Gateway {
                        http,
                        admin,
                        https,
                        dir,
                        child: Some(child),
                        exit: None,
                    }
                }
                Err(StartError::InUse(e)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "anygate start attempt {attempt}/{START_ATTEMPTS}: address in use, retrying with new ports"
                    );
                    last_err = e;
                }
                Err(StartError::Fatal(msg)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{msg}");
                }
            }
        }
        panic!("anygate did not start after {START_ATTEMPTS} attempts (address in use); last stderr:\n{last_err}");
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.exit = Some(st);
                }
            }
        }
        self.exit
    }

    /// `<dir>/anygate.yaml`
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("anygate.yaml")
    }

    /// The temp dir holding the config and the logs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Substitutes the placeholders with this gateway's ports and dir.
    pub fn render(&self, yaml_template: &str) -> String {
        render_template(
            yaml_template,
            self.http,
            self.https,
            self.admin,
            self.dir.path(),
        )
    }

    /// Renders `yaml_template` over the config file (e.g. before a reload).
    pub fn write_config(&self, yaml_template: &str) {
        let p = self.config_path();
        fs::write(&p, self.render(yaml_template))
            .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// What the process printed on stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path())
    }

    /// What the process printed on stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path())
    }

    /// Polls stdout+stderr until `needle` shows up; false after `timeout`.
    pub fn wait_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) || self.stdout().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("gateway was not started")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit().is_none()
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.try_exit()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`, `QUIT`, ...).
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_exit() {
            return Some(st);
        }
        let st = wait_child(self.child.as_mut()?, timeout);
        if st.is_some() {
            self.exit = st;
        }
        st
    }

    /// SIGINT (Pingora's fast shutdown), wait up to 10 s, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let _ = send_signal(child.id(), "INT");
        let mut st = wait_child(child, STOP_TIMEOUT);
        if st.is_none() {
            eprintln!(
                "anygate (pid {}) still running {STOP_TIMEOUT:?} after SIGINT, killing it",
                child.id()
            );
            let _ = child.kill();
            st = child.wait().ok();
        }
        self.exit = st;
    }

    /// SIGKILL right away (no graceful shutdown) and reap.
    pub fn kill(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            self.exit = child.wait().ok();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

enum StartError {
    InUse(String),
    Fatal(String),
}

/// Polls (every 20 ms, 30 s in all) until each address accepts a TCP
/// connection; fails early if the child exits.
fn wait_started(
    child: &mut Child,
    dir: &Path,
    addrs: &[(&str, SocketAddr)],
) -> Result<(), StartError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let report = |what: String| {
        format!(
            "{what}\nbinary: {}\nconfig:\n{}\n--- stderr:\n{}\n--- stdout:\n{}",
            anygate_bin().display(),
            read_lossy(&dir.join("anygate.yaml")),
            read_lossy(&dir.join("stderr.log")),
            read_lossy(&dir.join("stdout.log")),
        )
    };
    for (name, addr) in addrs {
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let stderr = read_lossy(&dir.join("stderr.log"));
                if stderr.to_ascii_lowercase().contains("in use") {
                    return Err(StartError::InUse(stderr));
                }
                return Err(StartError::Fatal(report(format!(
                    "anygate exited before listening on its {name} address {addr} ({st})"
                ))));
            }
            if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                // The port may have been taken by another process after it was picked:
                // Pingora then retries its bind without exiting.
                match super::owner::owns_listener(child.id(), *addr) {
                    Some(false) => {
                        let stderr = read_lossy(&dir.join("stderr.log"));
                        if stderr.to_ascii_lowercase().contains("in use") {
                            return Err(StartError::InUse(stderr));
                        }
                    }
                    _ => break,
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(report(format!(
                    "anygate did not accept connections on its {name} address {addr} within {START_TIMEOUT:?}"
                ))));
            }
            thread::sleep(POLL);
        }
    }
    Ok(())
}

/// Writes `yaml` to a temp file named `anygate.yaml` (placeholders rendered
/// with free ports and the temp dir) and runs `anygate check -c FILE`.
/// Returns (exit code, stdout, stderr); the exit code is -1 if killed by a signal.
pub fn check(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::Builder::new()
        .prefix("anygate-check-")
        .tempdir()
        .expect("create temp dir");
    let ports = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 3);
    let text = render_template(
        yaml,
        loopback(ports[0]),
        loopback(ports[1]),
        loopback(ports[2]),
        dir.path(),
    );
    let path = dir.path().join("anygate.yaml");
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    check_file(&path)
}

/// Runs `anygate check -c PATH`; returns (exit code, stdout, stderr).
pub fn check_file(path: &Path) -> (i32, String, String) {
    run_anygate(
        &["check".as_ref(), "-c".as_ref(), path.as_os_str()],
        CHECK_TIMEOUT,
    )
}

/// Like [`check_file`] with extra environment variables (e.g. the secrets a file names).
pub fn check_file_with_env(path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    run_anygate_with_env(
        &["check".as_ref(), "-c".as_ref(), path.as_os_str()],
        env,
        CHECK_TIMEOUT,
    )
}

/// Like [`check`] with extra environment variables.
pub fn check_with_env(yaml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    check_with_args(yaml, &[], env)
}

/// `anygate check --strict`: what `run` would accept (an unset variable is an error).
pub fn check_strict_with_env(yaml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    check_with_args(yaml, &["--strict"], env)
}

fn check_with_args(yaml: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::Builder::new()
        .prefix("anygate-check-")
        .tempdir()
        .expect("create temp dir");
    let ports = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 3);
    let text = render_template(
        yaml,
        loopback(ports[0]),
        loopback(ports[1]),
        loopback(ports[2]),
        dir.path(),
    );
    let path = dir.path().join("anygate.yaml");
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let mut argv: Vec<&std::ffi::OsStr> = vec!["check".as_ref()];
    argv.extend(args.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    argv.extend(["-c".as_ref(), path.as_os_str()]);
    run_anygate_with_env(&argv, env, CHECK_TIMEOUT)
}

/// Runs the binary with `args` to completion (killed and panics after
/// `timeout`); returns (exit code, stdout, stderr).
pub fn run_anygate(args: &[&std::ffi::OsStr], timeout: Duration) -> (i32, String, String) {
    run_anygate_with_env(args, &[], timeout)
}

/// Like [`run_anygate`] with extra environment variables.
pub fn run_anygate_with_env(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (i32, String, String) {
    run_anygate_env(args, env, &[], timeout)
}

/// Runs anygate with `env` set and the variables in `unset` removed from its environment.
pub fn run_anygate_env(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    unset: &[&str],
    timeout: Duration,
) -> (i32, String, String) {
    let logs = tempfile::Builder::new()
        .prefix("anygate-run-")
        .tempdir()
        .expect("create temp dir");
    let out_p = logs.path().join("stdout.log");
    let err_p = logs.path().join("stderr.log");
    let bin = anygate_bin();
    let mut cmd = Command::new(&bin);
    for var in unset {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(File::create(&out_p).expect("create stdout.log"))
        .stderr(File::create(&err_p).expect("create stderr.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
    let st = match wait_child(&mut child, timeout) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {:?} did not exit within {timeout:?}\n--- stderr:\n{}\n--- stdout:\n{}",
                bin.display(),
                args,
                read_lossy(&err_p),
                read_lossy(&out_p)
            );
        }
    };
    (
        st.code().unwrap_or(-1),
        read_lossy(&out_p),
        read_lossy(&err_p),
    )
}
