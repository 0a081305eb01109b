//! Any long-running `anygate` subcommand (demo, echo), with its output in files, killed on drop.

use super::gateway::anygate_bin;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Process {
    child: Child,
    dir: tempfile::TempDir,
}

impl Process {
    pub fn spawn(args: &[&str]) -> Process {
        let dir = tempfile::Builder::new()
            .prefix("anygate-proc-")
            .tempdir()
            .expect("temp dir");
        let child = Command::new(anygate_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log")).expect("stdout.log"))
            .stderr(File::create(dir.path().join("stderr.log")).expect("stderr.log"))
            .spawn()
            .expect("spawn anygate");
        Process { child, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("stdout.log")).unwrap_or_default())
            .into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("stderr.log")).unwrap_or_default())
            .into_owned()
    }

    /// Polls (bounded) until `addr` accepts connections; panics with the output otherwise.
    pub fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "anygate exited ({st}):\n{}\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{addr} never listened:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`QUIT`, `TERM`, ...).
    pub fn signal(&self, sig: &str) {
        super::gateway::send_signal(self.pid(), sig).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// Polls (bounded) until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let err = self.stderr();
            if err.contains(needle) {
                return err;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never showed {needle:?}:
{err}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls (bounded) until stdout contains `needle`.
    pub fn wait_stdout(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "stdout never showed {needle:?}:\n{out}\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
