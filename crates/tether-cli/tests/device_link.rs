//! The device example (`examples/device_link.rs`) against `tether serve`, both real processes
//! on 127.0.0.1: the device reads its endpoint from a provisioning blob, keeps its mTLS link,
//! and when the gateway restarts (same port, same ticket key file) it reconnects and resumes
//! its session; no frame is lost. Every process is killed by PID when its guard drops, also when
//! a test fails; every temporary directory is removed.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// The example binary. `cargo test` builds examples with the tests, but not when a single test
/// target is picked (`--test device_link`): then it is built here, once, with the same cargo
/// and profile.
fn device_link() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/device_link-HASH -> target/<profile>/examples/device_link
            let profile_dir = exe.parent().unwrap().parent().unwrap();
            let path = profile_dir
                .join("examples")
                .join(format!("device_link{}", std::env::consts::EXE_SUFFIX));
            let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            build.args([
                "build",
                "--quiet",
                "-p",
                "tether-cli",
                "--example",
                "device_link",
            ]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build
                .status()
                .expect("run cargo build --example device_link");
            assert!(status.success(), "cargo build --example device_link failed");
            assert!(
                path.exists(),
                "{} is missing after the build",
                path.display()
            );
            path
        })
        .clone()
}

/// A process with its stdout and stderr gathered into one text; killed (SIGKILL, by PID) and
/// reaped on drop.
struct Proc {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn start(name: &'static str, program: &Path, args: &[&str], cwd: &Path) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
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
        Proc {
            name,
            child,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for a line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from {} after {timeout:?}:\n{}",
                self.name,
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(50)); // let the readers drain the pipes
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tether serve` on `listen` with the test PKI and a shared ticket key file; waits until it
/// listens and returns it with its address.
fn gateway(dir: &Path, listen: &str) -> (Proc, String) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (cert, key, ca, tickets) = (
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        p("tickets.key"),
    );
    let args = [
        "serve",
        "--listen",
        listen,
        "--http",
        "off",
        "--cert",
        &cert,
        "--key",
        &key,
        "--ca",
        &ca,
        "--ticket-keys",
        &tickets,
        "--drain-timeout",
        "5",
    ];
    let mut gw = Proc::start("tether serve", Path::new(TETHER), &args, dir);
    let line = gw.wait_for("tether serve: listening on ", Duration::from_secs(30));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    (gw, addr)
}

fn device_args(dir: &Path, ca: &str) -> Vec<String> {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    vec![
        "--ca".into(),
        p(ca),
        "--cert".into(),
        p("device-1.pem"),
        "--key".into(),
        p("device-1.key"),
        "--server-name".into(),
        "localhost".into(),
    ]
}

/// The provisioning blob for `endpoint`, as the device reads it from memory.
fn write_blob(dir: &Path, endpoint: &str) -> PathBuf {
    let mut blob = vec![0u8; 300];
    let n = tether::provision::write_blob(endpoint, &mut blob).expect("endpoint fits the blob");
    let path = dir.join("endpoint.bin");
    std::fs::write(&path, &blob[..n]).unwrap();
    path
}

#[test]
fn gateway_restart_ends_in_a_resumed_session_and_no_frame_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    common::pki(dir.path());
    std::fs::write(dir.path().join("tickets.key"), [7u8; 96]).unwrap();
    let (mut gw, addr) = gateway(dir.path(), "127.0.0.1:0");
    let blob = write_blob(dir.path(), &addr);

    let mut args = device_args(dir.path(), "ca.pem");
    args.extend(
        [
            "--blob",
            blob.to_str().unwrap(),
            "--frames",
            "30",
            "--interval-ms",
            "50",
            "--backoff-ms",
            "50:500",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut device = Proc::start("device_link", &device_link(), &args, dir.path());
    let first = device.wait_for("connected: connection 1 ", Duration::from_secs(30));
    assert!(first.ends_with("(resumed: no)"), "{first}");
    device.wait_for("frame 5: echoed", Duration::from_secs(30));

    // The gateway restarts: it drains (close_notify to the device) and a new process takes
    // the same port with the same ticket keys.
    gw.sigterm();
    assert!(
        gw.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        gw.output()
    );
    drop(gw);
    let (gw2, addr2) = gateway(dir.path(), &addr);
    assert_eq!(addr2, addr);

    let status = device.wait_exit(Duration::from_secs(60));
    let out = device.output();
    assert!(
        status.success(),
        "device failed ({status}):\n{out}\ngateway:\n{}",
        gw2.output()
    );
    let second = out
        .lines()
        .find(|l| l.starts_with("connected: connection 2 "))
        .unwrap_or_else(|| panic!("no second connection:\n{out}"));
    assert!(
        second.ends_with("(resumed: yes)"),
        "not resumed: {second}\n{out}"
    );
    assert!(out.contains("link lost: "), "{out}");
    for i in 1..=30 {
        assert!(
            out.contains(&format!("\nframe {i}: echoed\n")),
            "frame {i} missing:\n{out}"
        );
    }
    assert!(
        out.contains("done: 30 frames echoed over 2 connection(s), 1 resumed"),
        "{out}"
    );
}

#[test]
fn a_gateway_from_another_ca_is_refused_at_once_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    common::pki(dir.path());
    std::fs::write(dir.path().join("tickets.key"), [7u8; 96]).unwrap();
    let (gw, addr) = gateway(dir.path(), "127.0.0.1:0");
    let mut args = device_args(dir.path(), "other/ca.pem");
    args.extend(["--endpoint", &addr, "--frames", "3"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut device = Proc::start("device_link", &device_link(), &args, dir.path());
    let status = device.wait_exit(Duration::from_secs(30));
    let out = device.output();
    assert_eq!(status.code(), Some(1), "{out}\ngateway:\n{}", gw.output());
    assert!(
        out.contains("error: ") && out.contains("certificate"),
        "{out}"
    );
    assert!(!out.contains("connected:"), "{out}");
    assert!(
        !out.contains("link lost"),
        "a certificate error must not be retried:\n{out}"
    );
}

#[test]
fn bad_blobs_and_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    common::pki(dir.path());
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, 0u32.to_le_bytes()).unwrap();
    let mut args = device_args(dir.path(), "ca.pem");
    args.extend(["--blob", empty.to_str().unwrap()].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut device = Proc::start("device_link", &device_link(), &args, dir.path());
    assert_eq!(device.wait_exit(Duration::from_secs(30)).code(), Some(2));
    let out = device.output();
    assert!(
        out.contains("error: blob ") && out.contains("empty.bin"),
        "{out}"
    );

    let mut device = Proc::start(
        "device_link",
        &device_link(),
        &["--frames", "x"],
        dir.path(),
    );
    assert_eq!(device.wait_exit(Duration::from_secs(30)).code(), Some(2));
    assert!(device.output().contains("--frames needs a whole number"));
}
