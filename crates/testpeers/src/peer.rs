//! [`Peer`]: a spawned peer process whose output is captured and which is killed on drop.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Why a peer did not do what the test waited for. Its `Debug` is its `Display`, so
/// `.unwrap()` prints the peer's output readably.
pub struct PeerError {
    message: String,
}

impl PeerError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The whole message, with the peer's output when there was one.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerError {}

/// The transport a peer listens on, for [`Peer::wait_listening`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP socket in LISTEN state.
    Tcp,
    /// A bound UDP socket.
    Udp,
}

/// Output captured from the child's pipes.
#[derive(Default)]
struct Captured {
    /// stdout and stderr interleaved in the order the reader threads got them.
    all: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Pipes not yet at end of file.
    open: usize,
}

#[derive(Default)]
struct Shared {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn drain(mut pipe: impl Read, stream: Stream, shared: Arc<Shared>) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut c = shared.lock();
        c.all.extend_from_slice(&buf[..n]);
        match stream {
            Stream::Stdout => c.stdout.extend_from_slice(&buf[..n]),
            Stream::Stderr => c.stderr.extend_from_slice(&buf[..n]),
        }
        drop(c);
        shared.changed.notify_all();
    }
    shared.lock().open -= 1;
    shared.changed.notify_all();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether process `pid` exists and is not a zombie (reads `/proc/PID/stat`).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|entry| {
        let target = std::fs::read_link(entry.ok()?.path()).ok()?;
        let target = target.to_str()?;
        target
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// Whether one of `inodes` is a socket bound to local `port` (and, for TCP, listening), per
/// `/proc/net/{tcp,tcp6,udp,udp6}`.
fn port_bound_by(transport: Transport, port: u16, inodes: &HashSet<u64>) -> bool {
    let (tables, listen_only) = match transport {
        Transport::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], true),
        Transport::Udp => (["/proc/net/udp", "/proc/net/udp6"], false),
    };
    let port_hex = format!("{port:04X}");
    tables.iter().any(|table| {
        let Ok(text) = std::fs::read_to_string(table) else {
            return false;
        };
        text.lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            f.len() > 9
                && f[1].rsplit_once(':').is_some_and(|(_, p)| p == port_hex)
                && (!listen_only || f[3] == "0A")
                && f[9]
                    .parse::<u64>()
                    .is_ok_and(|inode| inodes.contains(&inode))
        })
    })
}

/// A running peer process, killed (SIGKILL) and reaped when dropped, even when the test panics.
///
/// stdin is a pipe the test writes to ([`send`](Self::send)); stdout and stderr are pipes that two
/// threads drain into memory, so the peer never blocks on a full pipe. When a test panics while a
/// `Peer` is alive, its drop prints the peer's command line and the tail of its output.
pub struct Peer {
    name: String,
    command_line: String,
    child: Child,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    status: Option<ExitStatus>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("command", &self.command_line)
            .field("status", &self.status)
            .finish()
    }
}

impl Peer {
    /// Spawns `command` with stdin, stdout and stderr piped (overriding what `command` had) and
    /// starts the threads that drain the output. `name` appears in messages.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<Peer, PeerError> {
        let name = name.into();
        let command_line = format!("{command:?}");
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            let program = command.get_program().to_string_lossy().into_owned();
            let hint = if e.kind() == io::ErrorKind::NotFound {
                format!(
                    " ({program} not found: scripts/test installs it with apt-get (package {}))",
                    crate::debian_package(&program)
                )
            } else {
                String::new()
            };
            PeerError::new(format!("could not start {name}: {command_line}: {e}{hint}"))
        })?;
        let shared = Arc::new(Shared::default());
        shared.lock().open = 2;
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        for (pipe, stream) in [
            (Box::new(stdout) as Box<dyn Read + Send>, Stream::Stdout),
            (Box::new(stderr), Stream::Stderr),
        ] {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{name}-output"))
                .spawn(move || drain(pipe, stream, shared))
                .map_err(|e| PeerError::new(format!("could not start output thread: {e}")))?;
        }
        let stdin = child.stdin.take();
        Ok(Peer {
            name,
            command_line,
            child,
            stdin,
            shared,
            status: None,
        })
    }

    /// The name given at spawn ("openssl s_server", ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command line, as `Command`'s `Debug` shows it.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// stdout and stderr so far, interleaved in arrival order (invalid UTF-8 replaced).
    pub fn output_so_far(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().all).into_owned()
    }

    /// stdout so far (for s_client and gnutls-cli: the application data received, plus
    /// whatever the tool prints there).
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().stdout).into_owned()
    }

    /// stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().stderr).into_owned()
    }

    fn error(&self, what: &str) -> PeerError {
        let state = if process_alive(self.pid()) {
            "still running".to_owned()
        } else {
            match self.status {
                Some(status) => format!("exited: {status}"),
                None => "exited".to_owned(),
            }
        };
        PeerError::new(format!(
            "{}: {what}\n  pid {} ({state})\n  command: {}\n  output so far:\n{}",
            self.name,
            self.pid(),
            self.command_line,
            indent(&self.output_so_far())
        ))
    }

    /// Waits until `needle` appears in stdout or in stderr. Fails at `timeout`, or as soon as
    /// the peer has closed both pipes (exited) without printing it.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Result<(), PeerError> {
        let deadline = Instant::now() + timeout;
        let needle_bytes = needle.as_bytes();
        // Search only what arrived since the last look (plus an overlap for a needle split
        // between reads), so a peer that prints megabytes costs linear time.
        let mut seen = [0usize; 2];
        let mut c = self.shared.lock();
        loop {
            for (stream, seen) in [&c.stdout, &c.stderr].into_iter().zip(&mut seen) {
                let from = seen.saturating_sub(needle_bytes.len());
                if contains(&stream[from..], needle_bytes) {
                    return Ok(());
                }
                *seen = stream.len();
            }
            let now = Instant::now();
            if c.open == 0 || now >= deadline {
                let closed = c.open == 0;
                drop(c);
                let why = if closed {
                    "closed its output"
                } else {
                    "timed out"
                };
                return Err(self.error(&format!(
                    "{why} while waiting {timeout:?} for {needle:?} in its output"
                )));
            }
            c = self
                .shared
                .changed
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until this process holds a socket bound to local `port`: listening for TCP, bound
    /// for UDP. It reads `/proc/net/*` and `/proc/PID/fd`, so it does not connect (unlike
    /// [`wait_tcp_ready`](Self::wait_tcp_ready)) and works for DTLS servers. Fails at `timeout`
    /// or when the process exits first.
    pub fn wait_listening(
        &self,
        transport: Transport,
        port: u16,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if port_bound_by(transport, port, &socket_inodes(self.pid())) {
                return Ok(());
            }
            if !process_alive(self.pid()) {
                self.settle_output();
                return Err(self.error(&format!(
                    "exited before listening on {transport:?} port {port}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(self.error(&format!(
                    "not listening on {transport:?} port {port} after {timeout:?}"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a TCP connect to 127.0.0.1:`port` succeeds (the probe connection is closed at
    /// once). Note the probe is a real connection: `s_server -naccept N` counts it and logs an
    /// error for it; prefer [`wait_listening`](Self::wait_listening) for such servers.
    pub fn wait_tcp_ready(&self, port: u16, timeout: Duration) -> Result<(), PeerError> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            if !process_alive(self.pid()) {
                self.settle_output();
                return Err(self.error(&format!("exited before accepting on port {port}")));
            }
            if Instant::now() >= deadline {
                return Err(self.error(&format!(
                    "no TCP connection to port {port} after {timeout:?}"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `data` to the peer's stdin and flushes (s_client / gnutls-cli send it to their
    /// peer; s_server in [`SServerMode::Stdio`](crate::SServerMode::Stdio) sends it to its client).
    pub fn send(&mut self, data: &[u8]) -> Result<(), PeerError> {
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(data).and_then(|()| stdin.flush()),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin was closed",
            )),
        };
        result.map_err(|e| self.error(&format!("could not write to its stdin: {e}")))
    }

    /// [`send`](Self::send)s `line` followed by `\n`.
    pub fn send_line(&mut self, line: &str) -> Result<(), PeerError> {
        let mut data = Vec::with_capacity(line.len() + 1);
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
        self.send(&data)
    }

    /// Direct access to the stdin pipe (`None` after [`close_stdin`](Self::close_stdin)).
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// Closes stdin: end of file for the peer. s_client (without `-quiet`/`-ign_eof`) and
    /// gnutls-cli then close the connection and exit; s_server without `-quiet` shuts down.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit by itself, then for its output to be
    /// drained. Does not kill it on timeout (drop does).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, PeerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.settle_output();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(self.error(&format!("did not exit within {timeout:?}")));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (by PID, via `Child::kill`) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // Err means it already exited; wait() below reaps it either way.
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.stdin = None;
    }

    /// After exit, gives the drain threads a moment to read what is left in the pipes.
    fn settle_output(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut c = self.shared.lock();
        while c.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            c = self
                .shared
                .changed
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if thread::panicking() {
            let output = self.output_so_far();
            let tail_from = output.char_indices().rev().nth(4000).map_or(0, |(i, _)| i);
            eprintln!(
                "--- peer {} (pid {}) at test failure\n  command: {}\n  output{}:\n{}",
                self.name,
                self.pid(),
                self.command_line,
                if tail_from > 0 { " (tail)" } else { "" },
                indent(&output[tail_from..])
            );
        }
        self.kill();
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)".to_owned();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_kills_on_drop() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out-line; echo err-line >&2; cat"]);
        let mut peer = Peer::spawn("sh", cmd).unwrap();
        let pid = peer.pid();
        peer.wait_for_output("out-line", Duration::from_secs(5))
            .unwrap();
        peer.wait_for_output("err-line", Duration::from_secs(5))
            .unwrap();
        peer.send_line("echoed by cat").unwrap();
        peer.wait_for_output("echoed by cat", Duration::from_secs(5))
            .unwrap();
        assert!(peer.stderr_so_far().contains("err-line"));
        assert!(!peer.stdout_so_far().contains("err-line"));
        assert!(process_alive(pid));
        drop(peer);
        assert!(!process_alive(pid));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn drop_kills_the_peer_when_the_test_panics() {
        let pid = std::sync::atomic::AtomicU32::new(0);
        let result = std::panic::catch_unwind(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            let peer = Peer::spawn("sleep", cmd).unwrap();
            pid.store(peer.pid(), std::sync::atomic::Ordering::SeqCst);
            panic!("a failing test");
        });
        assert!(result.is_err());
        let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
        assert_ne!(pid, 0);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn exit_and_missing_output_are_errors_with_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo about-to-exit; exit 3"]);
        let mut peer = Peer::spawn("sh", cmd).unwrap();
        let err = peer
            .wait_for_output("never printed", Duration::from_secs(5))
            .unwrap_err();
        assert!(err.message().contains("closed its output"), "{err}");
        assert!(err.message().contains("about-to-exit"), "{err}");
        let status = peer.wait_exit(Duration::from_secs(5)).unwrap();
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn a_chatty_peer_never_blocks() {
        // 4 MiB, far beyond a 64 KiB pipe buffer, then a marker.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "head -c 4194304 /dev/zero; echo done-marker >&2"]);
        let peer = Peer::spawn("sh", cmd).unwrap();
        peer.wait_for_output("done-marker", Duration::from_secs(20))
            .unwrap();
    }

    #[test]
    fn spawn_of_missing_binary_says_how_to_install() {
        let err = Peer::spawn("x", Command::new("gnutls-serv-not-here")).unwrap_err();
        assert!(err.message().contains("not found"), "{err}");
    }

    #[test]
    fn wait_listening_ignores_sockets_of_other_processes() {
        // A listener of this test process, not of the child: wait_listening must not count it.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let peer = Peer::spawn("sleep", cmd).unwrap();
        let err = peer
            .wait_listening(Transport::Tcp, port, Duration::from_millis(200))
            .unwrap_err();
        assert!(err.message().contains("not listening"), "{err}");
        // ...while our own process does hold it.
        assert!(port_bound_by(
            Transport::Tcp,
            port,
            &socket_inodes(std::process::id())
        ));
    }
}
