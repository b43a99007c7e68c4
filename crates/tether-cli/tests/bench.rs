//! `tether bench` end to end: each subcommand for about a second against a `tether serve` (its
//! development PKI in a temporary directory) or the hidden plain TCP echo server, both started
//! here on 127.0.0.1 ports they pick. The JSON figures must be present and sane. Every process
//! is killed by PID when its guard drops, also when a test fails; temporary directories are
//! removed.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// A running `tether` server process, killed (SIGKILL, by PID) and reaped on drop.
struct Server {
    child: Child,
    output: Arc<Mutex<String>>,
    addr: String,
}

impl Server {
    /// Starts `tether ARGS` in `cwd`; waits for the line containing `marker`, whose next word
    /// is the address.
    fn start(args: &[&str], cwd: &Path, marker: &str) -> Server {
        let mut child = Command::new(TETHER)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tether");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let mut server = Server {
            child,
            output,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = server.output.lock().unwrap().clone();
            if let Some(line) = out.lines().find(|l| l.contains(marker)) {
                let after = line.split(marker).nth(1).unwrap();
                server.addr = after.split_whitespace().next().unwrap().to_owned();
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("tether {args:?} exited ({status}):\n{out}");
            }
            assert!(
                Instant::now() < deadline,
                "no {marker:?} from {args:?}:\n{out}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `tether serve` with a development PKI in `dir`.
    fn gateway(dir: &Path) -> Server {
        Server::start(
            &["serve", "--listen", "127.0.0.1:0", "--http", "off"],
            dir,
            "listening on ",
        )
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags that point `tether bench` at a development gateway, with mTLS.
fn target(gw: &Server, dir: &Path) -> Vec<String> {
    let dev = dir.join("tether-dev");
    let p = |f: &str| dev.join(f).to_str().unwrap().to_owned();
    vec![
        "--target".into(),
        gw.addr.clone(),
        "--ca".into(),
        p("ca.pem"),
        "--cert".into(),
        p("device-1.pem"),
        "--key".into(),
        p("device-1.key"),
        "--measure-pid".into(),
        gw.pid(),
    ]
}

/// Runs `tether bench ARGS --json FILE`; checks it succeeded; returns the JSON.
fn bench(args: &[String], dir: &Path) -> Value {
    let json: PathBuf = dir.join(format!("bench-{}.json", args[0]));
    let out = Command::new(TETHER)
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run tether bench");
    let text = |o: &Output| {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        out.status.success(),
        "tether bench {args:?}:\n{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("tether bench {}", args[0])),
        "{}",
        text(&out)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn args(first: &[&str], rest: Vec<String>) -> Vec<String> {
    first.iter().map(|s| s.to_string()).chain(rest).collect()
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing or not a number in {v:#}"))
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing or not a number in {v:#}"))
}

fn ordered(v: &Value, base: &str) {
    let p: Vec<u64> = ["min", "p50", "p90", "p99", "max"]
        .iter()
        .map(|k| u(v, &format!("{base}/{k}")))
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "{base} not ordered: {p:?}"
    );
    assert!(p[4] > 0, "{base}: all zero");
}

#[test]
fn handshakes_full_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Server::gateway(dir.path());
    let t = target(&gw, dir.path());

    let v = bench(
        &args(&["handshakes", "--duration", "1"], t.clone()),
        dir.path(),
    );
    let n = u(&v, "/handshakes");
    assert!(n > 0, "{v:#}");
    assert_eq!(u(&v, "/errors/total"), 0, "{v:#}");
    assert_eq!(u(&v, "/resumed"), 0, "full handshakes: {v:#}");
    assert_eq!(v["mtls"], true);
    assert_eq!(v["negotiated"]["version"], "TLSv1.3");
    assert!(f(&v, "/handshakes_per_s") > 0.0);
    ordered(&v, "/latency_us");
    // The gateway did work, and the tool says what it cost per handshake.
    assert!(f(&v, "/server/cpu_s") > 0.0, "{v:#}");
    assert!(f(&v, "/server/cpu_us_per_handshake") > 0.0, "{v:#}");
    assert!(f(&v, "/client/cpu_s") > 0.0, "{v:#}");

    let v = bench(
        &args(
            &[
                "handshakes",
                "--resume",
                "--tls",
                "1.3",
                "--concurrency",
                "4",
                "--duration",
                "1",
            ],
            t.clone(),
        ),
        dir.path(),
    );
    let n = u(&v, "/handshakes");
    assert!(n > 0, "{v:#}");
    assert_eq!(v["tls"], "TLS 1.3");
    assert!(f(&v, "/resumed_fraction") >= 0.99, "{v:#}");
    assert_eq!(u(&v, "/errors/total"), 0, "{v:#}");

    // X25519 by default; --kx and --crypto choose the group and the client's library.
    assert_eq!(v["negotiated"]["kx_group"], "X25519", "{v:#}");
    for (kx, crypto, group) in [
        ("p256", "ring", "secp256r1"),
        ("x25519mlkem768", "aws-lc", "X25519MLKEM768"),
    ] {
        let v = bench(
            &args(
                &[
                    "handshakes",
                    "--tls",
                    "1.3",
                    "--kx",
                    kx,
                    "--crypto",
                    crypto,
                    "--duration",
                    "1",
                ],
                t.clone(),
            ),
            dir.path(),
        );
        assert!(u(&v, "/handshakes") > 0, "{v:#}");
        assert_eq!(v["negotiated"]["kx_group"], group, "{v:#}");
        assert_eq!(u(&v, "/errors/total"), 0, "{v:#}");
    }
}

#[test]
fn echo_percentiles_are_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Server::gateway(dir.path());
    let t = target(&gw, dir.path());
    let v = bench(
        &args(
            &[
                "echo",
                "--connections",
                "8",
                "--size",
                "100",
                "--duration",
                "1",
            ],
            t.clone(),
        ),
        dir.path(),
    );
    assert_eq!(u(&v, "/opened"), 8, "{v:#}");
    assert!(u(&v, "/frames") > 0, "{v:#}");
    assert_eq!(u(&v, "/errors/total"), 0, "{v:#}");
    ordered(&v, "/latency_us");
    assert!(f(&v, "/server/cpu_us_per_frame") > 0.0, "{v:#}");

    // A fixed rate: about that many frames.
    let v = bench(
        &args(
            &[
                "echo",
                "--connections",
                "4",
                "--rate",
                "200",
                "--duration",
                "1",
            ],
            t,
        ),
        dir.path(),
    );
    let frames = u(&v, "/frames");
    assert!(
        (150..=210).contains(&frames),
        "{frames} frames at 200/s: {v:#}"
    );
    ordered(&v, "/latency_us");
}

#[test]
fn idle_holds_sessions_in_one_process_and_in_workers() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Server::gateway(dir.path());
    let t = target(&gw, dir.path());

    let v = bench(
        &args(
            &[
                "idle",
                "--connections",
                "60",
                "--sources",
                "3",
                "--hold",
                "0.3",
            ],
            t.clone(),
        ),
        dir.path(),
    );
    assert_eq!(u(&v, "/held"), 60, "{v:#}");
    assert_eq!(u(&v, "/processes"), 1);
    assert_eq!(
        v["sources"],
        serde_json::json!(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    );
    assert_eq!(u(&v, "/errors/total"), 0, "{v:#}");
    assert_eq!(u(&v, "/clean_closes"), 60, "{v:#}");
    // The gateway held a descriptor per session, and its RSS was sampled. The "before" sample
    // can still count the tool's probe connection, closing as it is taken: allow two of slack.
    assert!(
        u(&v, "/server/fds_held") + 2 >= u(&v, "/server/fds_before") + 60,
        "{v:#}"
    );
    assert!(u(&v, "/server/rss_kib_end") > 0, "{v:#}");
    assert!(v["server"]["rss_bytes_per_session"].is_number(), "{v:#}");

    // Two worker processes, 25 sessions each.
    let v = bench(
        &args(
            &[
                "idle",
                "--connections",
                "50",
                "--processes",
                "2",
                "--hold",
                "0.3",
            ],
            t,
        ),
        dir.path(),
    );
    assert_eq!(u(&v, "/processes"), 2);
    assert_eq!(u(&v, "/held"), 50, "{v:#}");
    assert_eq!(u(&v, "/clean_closes"), 50, "{v:#}");
    assert!(f(&v, "/client/cpu_s") > 0.0, "{v:#}");
}

#[test]
fn idle_waits_for_a_busy_server_to_settle_before_the_held_sample() {
    // A measured process that keeps a core busy for 4 s after it starts, then sleeps: like a
    // server still completing TLS 1.3 handshakes its clients consider done. The held sample
    // must wait for it, so its work is not counted as holding CPU.
    struct Busy(Child);
    impl Drop for Busy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let busy = Busy(
        Command::new("bash")
            .args(["-c", "while [ $SECONDS -lt 4 ]; do :; done; exec sleep 120"])
            .spawn()
            .expect("start bash"),
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = Server::gateway(dir.path());
    let mut t = target(&gw, dir.path());
    t.extend(["--measure-pid".to_string(), busy.0.id().to_string()]);
    let v = bench(
        &args(&["idle", "--connections", "20", "--hold", "1"], t),
        dir.path(),
    );
    assert_eq!(u(&v, "/held"), 20, "{v:#}");
    assert!(f(&v, "/settle_s") >= 1.5, "settled too soon: {v:#}");
    assert!(
        f(&v, "/server/cpu_utilization_holding") < 0.3,
        "the busy period counted as holding: {v:#}"
    );
}

#[test]
fn plain_tcp_floor_against_the_echo_server() {
    let dir = tempfile::tempdir().unwrap();
    // On one thread (a single-threaded runtime), as scripts/bench-gateway measures the floor.
    let echo = Server::start(
        &[
            "bench",
            "tcp-echo-server",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ],
        dir.path(),
        "listening on ",
    );
    let v = bench(
        &[
            "handshakes".to_owned(),
            "--plain".into(),
            "--target".into(),
            echo.addr.clone(),
            "--duration".into(),
            "0.5".into(),
            "--measure-pid".into(),
            echo.pid(),
        ],
        dir.path(),
    );
    assert!(u(&v, "/handshakes") > 0, "{v:#}");
    assert_eq!(v["plain"], true);
    assert_eq!(u(&v, "/unclean_closes"), 0, "{v:#}");
    assert!(f(&v, "/server/cpu_s") >= 0.0, "{v:#}");
    assert_eq!(u(&v, "/plain_echo_bytes"), 0, "{v:#}");

    // With one message echoed per connection: every connection got its bytes back.
    let v = bench(
        &[
            "handshakes".to_owned(),
            "--plain".into(),
            "--plain-echo".into(),
            "100".into(),
            "--target".into(),
            echo.addr.clone(),
            "--connections".into(),
            "20".into(),
        ],
        dir.path(),
    );
    assert_eq!(u(&v, "/handshakes"), 20, "{v:#}");
    assert_eq!(u(&v, "/plain_echo_bytes"), 100, "{v:#}");
    assert_eq!(u(&v, "/unclean_closes"), 0, "{v:#}");
}

/// `--plain-echo` against a server that does not echo (a TLS gateway answers 100 bytes of 0x5a
/// with an alert and a close): every connection fails as an echo error, none is counted.
#[test]
fn plain_echo_against_a_server_that_does_not_echo_fails() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Server::gateway(dir.path());
    let err = fails(
        &[
            "handshakes",
            "--plain",
            "--plain-echo",
            "100",
            "--target",
            &gw.addr,
            "--duration",
            "0.5",
        ],
        dir.path(),
    );
    assert!(err.contains("echo"), "{err}");
}

/// Runs `tether bench ARGS`, expects failure; returns stderr.
fn fails(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(TETHER)
        .arg("bench")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded:\n{stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}:\n{stderr}");
    stderr
}

#[test]
fn bad_flags_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Server::gateway(dir.path());
    let cwd = dir.path();
    let first = |s: String| s.lines().next().unwrap().to_owned();

    // Our own checks: exactly one line.
    for (args, needle) in [
        (vec!["handshakes"], "needs --target HOST:PORT"),
        (vec!["echo", "--target", &gw.addr], "needs --ca FILE"),
        (
            vec!["idle", "--target", &gw.addr, "--ca", "missing.pem"],
            "cannot read CA missing.pem",
        ),
        (
            vec![
                "handshakes",
                "--target",
                &gw.addr,
                "--ca",
                "tether-dev/ca.pem",
                "--cert",
                "tether-dev/device-1.pem",
            ],
            "--cert needs --key",
        ),
        (
            // The gateway requires a client certificate.
            vec![
                "handshakes",
                "--target",
                &gw.addr,
                "--ca",
                "tether-dev/ca.pem",
            ],
            "certificate_required",
        ),
        (
            vec![
                "echo",
                "--target",
                &gw.addr,
                "--ca",
                "tether-dev/device-1.pem",
            ],
            "unknown issuer",
        ),
        (
            vec![
                "idle",
                "--target",
                "127.0.0.1:1",
                "--ca",
                "tether-dev/ca.pem",
            ],
            "Connection refused",
        ),
        (
            vec![
                "handshakes",
                "--target",
                "[::1]:1",
                "--sources",
                "2",
                "--ca",
                "tether-dev/ca.pem",
            ],
            "--sources binds to 127.0.0.2",
        ),
        (
            vec![
                "idle",
                "--measure-pid",
                "999999999",
                "--target",
                &gw.addr,
                "--ca",
                "tether-dev/ca.pem",
            ],
            "--measure-pid",
        ),
    ] {
        let err = fails(&args, cwd);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    // Flags clap rejects: a clear first line.
    for (args, needle) in [
        (vec!["echo", "--connections", "0"], "--connections"),
        (vec!["handshakes", "--tls", "1.1"], "use 1.2 or 1.3"),
        (vec!["echo", "--rate", "fast"], "frames per second"),
        (vec!["handshakes", "--duration", "-1"], ""),
        (vec!["handshakes", "--plain", "--resume"], "--resume"),
        (vec!["handshakes", "--kx", "ffdhe2048"], "use x25519, p256"),
        (
            vec!["handshakes", "--crypto", "openssl"],
            "\"ring\" or \"aws-lc\"",
        ),
        (vec!["handshakes", "--plain", "--kx", "p256"], "--kx"),
        (
            vec!["handshakes", "--plain-echo", "64"],
            "required arguments",
        ),
        (
            vec!["handshakes", "--plain", "--plain-echo", "0"],
            "--plain-echo",
        ),
        (vec!["idle", "--hold", "0"], "positive number of seconds"),
        (vec!["frobnicate"], "frobnicate"),
    ] {
        let err = first(fails(&args, cwd));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
