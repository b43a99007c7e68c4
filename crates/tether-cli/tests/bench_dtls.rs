//! `tether bench dtls` end to end: about a second per measurement against a `tether serve`
//! (its development PKI in a temporary directory, its DTLS listener on the TLS port over UDP)
//! started here on 127.0.0.1. The JSON figures must be present and sane. The gateway is killed
//! by PID when its guard drops, also when the test fails; the temporary directory is removed.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// A running `tether serve`, killed (SIGKILL, by PID) and reaped on drop.
struct Gateway {
    child: Child,
    dtls: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway(dir: &std::path::Path) -> Gateway {
    let mut child = Command::new(TETHER)
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "off"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tether serve");
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
    let mut gw = Gateway {
        child,
        dtls: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = output.lock().unwrap().clone();
        if let Some(line) = out.lines().find(|l| l.contains(" on udp ")) {
            gw.dtls = line
                .split(" on udp ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_owned();
            return gw;
        }
        if let Ok(Some(status)) = gw.child.try_wait() {
            panic!("tether serve exited ({status}):\n{out}");
        }
        assert!(Instant::now() < deadline, "no DTLS listener:\n{out}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn bench(dir: &std::path::Path, gw: &Gateway, extra: &[&str]) -> (Value, String) {
    let dev = dir.join("tether-dev");
    let p = |f: &str| dev.join(f).to_str().unwrap().to_owned();
    let json = dir.join("bench-dtls.json");
    let out = Command::new(TETHER)
        .args(["bench", "dtls", "--target", &gw.dtls, "--sni", "localhost"])
        .args(["--ca", &p("ca.pem"), "--cert", &p("device-1.pem")])
        .args(["--key", &p("device-1.key"), "--duration", "1"])
        .args(["--measure-pid", &gw.child.id().to_string()])
        .arg("--json")
        .arg(&json)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run tether bench dtls");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tether bench dtls {extra:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (v, stdout)
}

#[test]
fn bench_dtls_measures_handshakes_echo_and_records_against_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    for (version, label) in [("1.2", "DTLSv1.2"), ("1.3", "DTLSv1.3")] {
        let (v, stdout) = bench(dir.path(), &gw, &["--tls", version]);
        assert!(stdout.starts_with("tether bench dtls"), "{stdout}");
        assert_eq!(v["dtls_version"], label, "{v}");
        for phase in ["handshakes", "echo", "records"] {
            let p = &v[phase];
            assert!(p["count"].as_u64().unwrap() > 0, "{phase}: {p}");
            assert!(p["per_second"].as_f64().unwrap() > 0.0, "{phase}: {p}");
            // The gateway's CPU was sampled: a per-core figure.
            assert!(p["server"]["cpu_s"].as_f64().is_some(), "{phase}: {p}");
        }
        assert_eq!(v["handshakes"]["failed"], 0, "{v}");
        assert_eq!(v["echo"]["wrong"], 0, "{v}");
        assert_eq!(v["records"]["wrong"], 0, "{v}");
        assert_eq!(v["records"]["record_bytes"], 1200);
        let latency = &v["echo"]["latency_us"];
        assert!(latency["p50"].as_u64().unwrap() <= latency["max"].as_u64().unwrap());
    }
    // One measurement, another record size.
    let (v, _) = bench(
        dir.path(),
        &gw,
        &["--phases", "records", "--size", "200", "--window", "4"],
    );
    assert!(
        v.get("echo").is_none() && v.get("handshakes").is_none(),
        "{v}"
    );
    assert_eq!(v["records"]["record_bytes"], 200);
    assert!(v["records"]["count"].as_u64().unwrap() > 0);
    assert_eq!(v["client_udp"], "gso", "batches by default: {v}");
    // The client without batches (one system call per datagram): the same records, intact.
    let (v, stdout) = bench(
        dir.path(),
        &gw,
        &["--phases", "records,handshakes", "--udp", "plain"],
    );
    assert_eq!(v["client_udp"], "plain", "{v}");
    assert!(stdout.contains("one system call per datagram"), "{stdout}");
    assert!(v["records"]["count"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["records"]["wrong"], 0, "{v}");
    assert_eq!(v["handshakes"]["failed"], 0, "{v}");
}

#[test]
fn bench_dtls_says_what_is_wrong() {
    for (args, needle) in [
        (vec!["bench", "dtls"], "needs --target"),
        (
            vec!["bench", "dtls", "--target", "127.0.0.1:9", "--size", "5000"],
            "record size",
        ),
        (
            vec![
                "bench",
                "dtls",
                "--target",
                "127.0.0.1:9",
                "--phases",
                "warp",
            ],
            "not a measurement",
        ),
        (
            vec!["bench", "dtls", "--target", "127.0.0.1:9", "--kx", "p256"],
            "--kx and --crypto apply to TLS benches",
        ),
    ] {
        let out = Command::new(TETHER).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
