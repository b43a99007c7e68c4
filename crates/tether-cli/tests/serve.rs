//! `tether serve` end to end: the built binary as a process, on 127.0.0.1 ports it picks
//! (`--listen 127.0.0.1:0`) and prints. Every process is killed by PID when its guard drops,
//! also when a test fails; every temporary directory is removed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tether::net::TcpTlsSocket;
use tether::{ClientConfig, Identity, TicketKey, TlsVersion, Trust};
use tether_wire::{Decoder, ErrorCode, Frame, FrameType};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// A running `tether serve`, killed (SIGKILL, by PID) and reaped on drop.
struct Serve {
    child: Child,
    output: Arc<Mutex<String>>,
    tls: SocketAddr,
    http: Option<SocketAddr>,
}

impl Serve {
    /// Starts `tether serve ARGS` in `cwd` and waits for its "listening" line.
    fn start(args: &[&str], cwd: &Path) -> Serve {
        let mut child = Command::new(TETHER)
            .arg("serve")
            .args(args)
            .current_dir(cwd)
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
        let mut serve = Serve {
            child,
            output,
            tls: "0.0.0.0:0".parse().unwrap(),
            http: None,
        };
        let line = serve.wait_for("tether serve: listening on ", Duration::from_secs(30));
        let after = line.split("listening on ").nth(1).unwrap();
        serve.tls = after.split_whitespace().next().unwrap().parse().unwrap();
        serve.http = line
            .split("HTTP API on http://")
            .nth(1)
            .map(|a| a.trim().parse().unwrap());
        serve
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
                    "tether serve exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from tether serve after {timeout:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -TERM PID`.
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
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tether serve still running after {timeout:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self, config: &ClientConfig) -> TcpTlsSocket {
        tether::net::connect_named(&self.tls.to_string(), "localhost", config)
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.output()))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, a server certificate for localhost and 127.0.0.1, and device `device-1`, in `dir`.
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    device_cert: String,
    device_key: String,
    ca_pem: String,
}

fn files(dir: &Path) -> Files {
    use tether_pki::{Ca, Dir, IssueOptions, KeyKind};
    let ca = Ca::init(KeyKind::EcdsaP256, "serve test CA").unwrap();
    let opts = IssueOptions::default();
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], &opts)
        .unwrap();
    let device = ca.issue_client("device-1", &opts).unwrap();
    let pki = Dir::new(dir);
    pki.write_ca(&ca, false).unwrap();
    let server_paths = pki.server_paths(None).unwrap();
    pki.write_issued(&server_paths, &server, false).unwrap();
    Files {
        ca: pki.ca_paths().cert,
        cert: server_paths.cert,
        key: server_paths.key,
        device_cert: device.cert_pem,
        device_key: device.key_pem,
        ca_pem: ca.cert_pem().to_owned(),
    }
}

impl Files {
    fn tls_args(&self) -> Vec<String> {
        [
            ("--cert", &self.cert),
            ("--key", &self.key),
            ("--ca", &self.ca),
        ]
        .iter()
        .flat_map(|(flag, p)| [flag.to_string(), p.to_str().unwrap().to_owned()])
        .collect()
    }

    fn client(&self, version: Option<TlsVersion>) -> ClientConfig {
        let mut b = ClientConfig::builder(Trust::from_pem(self.ca_pem.as_bytes()).unwrap())
            .identity(
                Identity::from_pem(self.device_cert.as_bytes(), self.device_key.as_bytes())
                    .unwrap(),
            )
            .handshake_timeout(Duration::from_secs(20));
        if let Some(v) = version {
            b = b.versions(v, v);
        }
        b.build().unwrap()
    }
}

/// Issues a new server certificate (valid `days`, or the default) from the CA that [`files`]
/// made in `dir` and writes it over `server.pem` and `server.key`, as `tether pki issue server
/// --force` does.
fn renew_server_certificate(dir: &Path, days: Option<u32>) -> tether_pki::Issued {
    let pki = tether_pki::Dir::new(dir);
    let issued = pki
        .load_ca()
        .unwrap()
        .issue_server(
            &["localhost".into(), "127.0.0.1".into()],
            &tether_pki::IssueOptions {
                days,
                ..tether_pki::IssueOptions::default()
            },
        )
        .unwrap();
    pki.write_issued(&pki.server_paths(None).unwrap(), &issued, true)
        .unwrap();
    issued
}

fn args<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

const LOCAL: [&str; 4] = ["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode_into(&mut out);
    }
    out
}

fn read_frames(s: &mut TcpTlsSocket, n: usize) -> Vec<Frame> {
    let mut d = Decoder::default();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < n {
        let k = s.read(&mut buf).expect("read replies");
        assert!(k > 0, "closed after {} of {n} frames", got.len());
        d.push(&buf[..k]);
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    got
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

/// `tether serve ARGS` with a flag clap refuses: its error (exit status 2).
fn bad_flag(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(TETHER)
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// Runs `tether serve ARGS` that must fail at start; returns its stderr (one line).
fn fails(args: &[&str], cwd: &Path) -> String {
    let mut child = Command::new(TETHER)
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself, quickly; killed by PID otherwise.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tether serve {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out: Output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !out.status.success(),
        "{args:?} succeeded:\n{stdout}{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    stderr.trim_end().to_owned()
}

#[test]
fn dev_pki_prints_a_device_command_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&LOCAL, dir.path());
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "device-1.pem",
        "device-1.key",
    ] {
        assert!(dir.path().join("tether-dev").join(f).is_file(), "{f}");
    }
    let out = serve.output();
    assert!(
        out.contains("development PKI: made ca, server, device-1 in tether-dev/"),
        "{out}"
    );
    // aws-lc by default (the gateway's faster library), one worker thread per CPU.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let workers = if cpus == 1 {
        ", aws-lc, 1 worker), ".to_owned()
    } else {
        format!(", aws-lc, {cpus} workers), ")
    };
    assert!(out.contains(&workers), "{out}");
    let (status, body) = http_get(serve.http.unwrap(), "/health");
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    if testpeers::skip_or_fail("openssl") {
        let command = out
            .lines()
            .find(|l| l.contains("openssl s_client"))
            .unwrap()
            .trim();
        let ran = Command::new("sh")
            .args(["-c", command])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&ran.stdout);
        // od -c of the ECHO reply, then the TIME reply's header.
        assert!(
            shown.contains(
                "\\0  \\0  \\0 001  \\0  \\0  \\0 005   h   e   l   l   o  \\0  \\0  \\0"
            ),
            "{command}\n{shown}\n{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        assert!(shown.contains("003  \\0  \\0  \\0  \\b"), "{shown}");
    }

    serve.sigterm();
    assert!(serve.wait_exit(Duration::from_secs(15)).success());
    assert!(serve.output().contains("tether serve: SIGTERM: draining"));

    // A second start reuses the PKI.
    let serve = Serve::start(&LOCAL, dir.path());
    assert!(serve.output().contains("development PKI: tether-dev/"));
}

#[test]
fn sigterm_with_a_frame_in_flight_answers_it_then_close_notify() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let base = f.tls_args();
    let mut serve = Serve::start(
        &args(&base, &[&LOCAL[..], &["--drain-timeout", "5"]].concat()),
        dir.path(),
    );
    let mut s = serve.connect(&f.client(None));
    let first = Frame::new(FrameType::Echo, b"first".to_vec());
    let second = Frame::new(FrameType::Reverse, b"in flight".to_vec());
    let wire = encode(&[first.clone(), second]);
    // One whole frame and the start of another, then SIGTERM, then the rest.
    let split = first.encoded_len() + 6;
    s.write_all(&wire[..split]).unwrap();
    serve.sigterm();
    serve.wait_for("SIGTERM: draining", Duration::from_secs(10));
    s.write_all(&wire[split..]).unwrap();
    let replies = read_frames(&mut s, 2);
    assert_eq!(replies[0], first);
    assert_eq!(
        replies[1],
        Frame::new(FrameType::Reverse, b"thgilf ni".to_vec())
    );
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).unwrap(), 0, "expected close_notify");
    assert!(serve.wait_exit(Duration::from_secs(10)).success());
    assert!(serve.output().contains("tether serve: stopped"));
    // New connections are refused once it stopped.
    assert!(TcpStream::connect(serve.tls).is_err());
}

#[test]
fn two_processes_sharing_a_ticket_key_file_resume_each_others_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let keys = dir.path().join("tickets.key");
    let mut bytes = TicketKey::generate().unwrap().to_bytes().to_vec();
    bytes.extend(TicketKey::generate().unwrap().to_bytes());
    std::fs::write(&keys, bytes).unwrap();
    let base = f.tls_args();
    let more = [&LOCAL[..], &["--ticket-keys", keys.to_str().unwrap()]].concat();
    let first = Serve::start(&args(&base, &more), dir.path());
    let second = Serve::start(&args(&base, &more), dir.path());
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let client = f.client(Some(version));
        let mut a = first.connect(&client);
        a.write_all(&encode(&[Frame::new(FrameType::Echo, b"1".to_vec())]))
            .unwrap();
        read_frames(&mut a, 1);
        assert!(!a.session().is_resumed());
        a.close().unwrap();
        let mut b = second.connect(&client);
        assert!(
            b.session().is_resumed(),
            "{version:?}: not resumed on the second process"
        );
        b.write_all(&encode(&[Frame::new(FrameType::Echo, b"2".to_vec())]))
            .unwrap();
        assert_eq!(read_frames(&mut b, 1)[0].body, b"2");
    }
    let (_, metrics) = http_get(second.http.unwrap(), "/metrics");
    assert!(
        metrics.contains("\ntether_handshakes_resumed_total 2\n"),
        "{metrics}"
    );
}

/// Two `tether serve` processes on one TLS port, `--reuse-port` by flag on one and by its
/// configuration file on the other: the kernel spreads 24 devices over both, and each
/// resumes wherever it lands (one ticket key file). `--reuse-port` with the DTLS listener on
/// the TLS port is refused with what to do.
#[test]
fn two_processes_share_one_port_with_reuse_port() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let keys = dir.path().join("tickets.key");
    std::fs::write(&keys, TicketKey::generate().unwrap().to_bytes()).unwrap();
    let port = testpeers::free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = f.tls_args();
    let keys_arg = keys.to_str().unwrap();
    let first = Serve::start(
        &args(
            &base,
            &[
                "--reuse-port",
                "--dtls-listen",
                "off",
                "--listen",
                &listen,
                "--http",
                "127.0.0.1:0",
                "--ticket-keys",
                keys_arg,
            ],
        ),
        dir.path(),
    );
    let toml = dir.path().join("second.toml");
    std::fs::write(
        &toml,
        format!("listen = \"{listen}\"\nreuse-port = true\ndtls-listen = \"off\"\nhttp = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let second = Serve::start(
        &args(
            &base,
            &[
                "--config",
                toml.to_str().unwrap(),
                "--ticket-keys",
                keys_arg,
            ],
        ),
        dir.path(),
    );
    assert_eq!(first.tls, second.tls);
    assert!(
        first.output().contains("TLS port shared (reuse-port)"),
        "{}",
        first.output()
    );
    let client = f.client(Some(TlsVersion::Tls13));
    let mut resumed = 0;
    for i in 0..24 {
        let mut s = first.connect(&client);
        let body = format!("frame {i}").into_bytes();
        s.write_all(&encode(&[Frame::new(FrameType::Echo, body.clone())]))
            .unwrap();
        assert_eq!(read_frames(&mut s, 1)[0].body, body);
        resumed += usize::from(s.session().is_resumed());
        s.close().unwrap();
    }
    let handshakes = |serve: &Serve| {
        let (_, metrics) = http_get(serve.http.unwrap(), "/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("tether_handshakes_total{result=\"ok\"} "))
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap()
    };
    let (a, b) = (handshakes(&first), handshakes(&second));
    assert_eq!(a + b, 24.0);
    assert!(a > 0.0 && b > 0.0, "all on one process: {a} and {b}");
    assert_eq!(resumed, 23);

    let err = fails(
        &args(&base, &["--reuse-port", "--listen", "127.0.0.1:0"]),
        dir.path(),
    );
    assert!(
        err.contains("--reuse-port") && err.contains("--dtls-listen off"),
        "{err}"
    );
}

/// Two gateways sharing a ticket key file behind HAProxy (TCP, round robin): a device's first
/// connection is a full handshake, every later one resumes, on whichever gateway the balancer
/// picks; while one gateway is down (a restart), the balancer sends the device to the other
/// and it still resumes.
#[test]
fn gateways_behind_haproxy_resume_each_others_sessions_and_survive_a_restart() {
    if !testpeers::skip_or_fail("haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let keys = dir.path().join("tickets.key");
    std::fs::write(&keys, TicketKey::generate().unwrap().to_bytes()).unwrap();
    let base = f.tls_args();
    let more = [&LOCAL[..], &["--ticket-keys", keys.to_str().unwrap()]].concat();
    let first = Serve::start(&args(&base, &more), dir.path());
    let mut second = Serve::start(&args(&base, &more), dir.path());
    let balancer =
        testpeers::haproxy::Haproxy::start(testpeers::free_port(), &[first.tls, second.tls])
            .unwrap();
    let through = format!("127.0.0.1:{}", balancer.port());
    let client = f.client(None);
    let exchange = |i: usize| {
        let mut s = tether::net::connect_named(&through, "localhost", &client)
            .unwrap_or_else(|e| panic!("connection {i} through haproxy: {e}"));
        let body = format!("frame {i}").into_bytes();
        s.write_all(&encode(&[Frame::new(FrameType::Echo, body.clone())]))
            .unwrap();
        assert_eq!(read_frames(&mut s, 1)[0].body, body);
        let resumed = s.session().is_resumed();
        s.close().unwrap();
        resumed
    };
    assert!(!exchange(0), "the first connection resumed nothing");
    for i in 1..5 {
        assert!(exchange(i), "connection {i} through haproxy did not resume");
    }
    let resumed = |serve: &Serve| {
        let (_, metrics) = http_get(serve.http.unwrap(), "/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("tether_handshakes_resumed_total "))
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap()
    };
    // Round robin: 0, 2, 4 on the first gateway, 1 and 3 on the second.
    assert_eq!((resumed(&first), resumed(&second)), (2.0, 2.0));

    // The second gateway goes down: its connections are redispatched to the first.
    second.sigterm();
    assert!(second.wait_exit(Duration::from_secs(15)).success());
    for i in 5..9 {
        assert!(
            exchange(i),
            "connection {i} (one gateway down) did not resume"
        );
    }
    assert_eq!(resumed(&first), 6.0);
    drop(balancer);
}

/// A server certificate with under 14 days left: the start says so, with what to do.
#[test]
fn a_server_certificate_near_its_expiry_is_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    renew_server_certificate(dir.path(), Some(5));
    let mut serve = Serve::start(&args(&f.tls_args(), &LOCAL), dir.path());
    let line = serve.wait_for("the server certificate expires", Duration::from_secs(10));
    assert!(line.contains("days from now): renew it"), "{line}");
    // A certificate with a year left (the others in these tests) gets no such line.
    let year = tempfile::tempdir().unwrap();
    let g = files(year.path());
    let quiet = Serve::start(&args(&g.tls_args(), &LOCAL), year.path());
    assert!(
        !quiet.output().contains("the server certificate expires"),
        "{}",
        quiet.output()
    );
}

#[test]
fn config_file_keys_and_flags_that_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    std::fs::write(
        dir.path().join("gateway.toml"),
        "# relative paths are relative to this file\n\
         listen = \"127.0.0.1:0\"\n\
         http = \"off\"\n\
         cert = \"server.pem\"\n\
         key = \"server.key\"\n\
         ca = \"ca.pem\"\n\
         max-frame = 16\n\
         verified-client-chains = 0\n\
         log-level = \"warn\"\n\
         handshake-timeout = 2.5\n\
         idle-timeout = 60\n\
         min-tls = \"1.3\"\n\
         crypto = \"ring\"\n\
         workers = 1\n\
         allow = \"ids.txt\"\n\
         allow-reload = 0.2\n\
         cert-reload = 0.2\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("ids.txt"), "# fleet\ndevice-1\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let mut serve = Serve::start(
        &["--config", config.to_str().unwrap(), "--max-frame", "64"],
        elsewhere.path(),
    );
    assert!(
        serve
            .output()
            .contains("1 allowed device id(s) (file re-read every 0.2 s)"),
        "{}",
        serve.output()
    );
    assert!(serve.http.is_none());
    assert!(
        serve.output().contains("(TLS 1.3 only, mTLS"),
        "{}",
        serve.output()
    );
    // One worker: the whole gateway (connections, file reloads, the drain below) on one thread.
    assert!(
        serve.output().contains(", ring, 1 worker), "),
        "{}",
        serve.output()
    );
    let mut s = serve.connect(&f.client(None));
    assert_eq!(s.session().version(), Some(TlsVersion::Tls13));
    // 40 bytes: over the file's 16, under the flag's 64.
    let echo = Frame::new(FrameType::Echo, vec![b'x'; 40]);
    s.write_all(&encode(std::slice::from_ref(&echo))).unwrap();
    assert_eq!(read_frames(&mut s, 1)[0], echo);
    s.write_all(&encode(&[Frame::new(FrameType::Echo, vec![b'y'; 100])]))
        .unwrap();
    let err = read_frames(&mut s, 1).remove(0);
    assert_eq!(err.parse_error().unwrap().0, ErrorCode::TooLarge);
    // The certificate files are read again (every 0.2 s here): a renewed server certificate
    // goes in force for new handshakes (each `f.client` is a fresh config: full handshakes).
    let renewed = renew_server_certificate(dir.path(), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = serve.connect(&f.client(None));
        if s.session().peer_certificates().unwrap()[0].as_ref() == renewed.cert_der.as_slice() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was not installed: {}",
            serve.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The allow-list file is read again (every 0.2 s here): device-1 dropped, its session ends.
    let mut s = serve.connect(&f.client(None));
    s.write_all(&encode(std::slice::from_ref(&echo))).unwrap();
    assert_eq!(read_frames(&mut s, 1)[0], echo);
    std::fs::write(dir.path().join("ids.txt"), "# nobody\n").unwrap();
    s.set_io_timeout(Some(Duration::from_secs(10)));
    let mut b = [0u8; 16];
    let read = s.read(&mut b);
    assert!(
        read.as_ref()
            .is_err_and(|e| e.to_string().contains("access_denied")),
        "expected access_denied: {read:?}"
    );
    // Ctrl-C drains like SIGTERM.
    let status = Command::new("kill")
        .args(["-INT", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(serve.wait_exit(Duration::from_secs(15)).success());
    assert!(serve.output().contains("tether serve: SIGINT: draining"));
}

/// `kill -HUP`: the certificate, the allow-list and the ticket keys are read again at once
/// (the periodic reads are an hour apart here) and what changed goes in force.
#[test]
fn sighup_reads_the_certificate_allow_list_and_ticket_keys_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let allow = dir.path().join("allow.txt");
    std::fs::write(&allow, "device-1\n").unwrap();
    let keys = dir.path().join("tickets.bin");
    std::fs::write(&keys, [7u8; 96]).unwrap();
    let base = f.tls_args();
    let paths = [allow.to_str().unwrap(), keys.to_str().unwrap()];
    let mut serve = Serve::start(
        &args(
            &base,
            &[
                &LOCAL[..],
                &["--allow", paths[0], "--ticket-keys", paths[1]],
                &["--allow-reload", "3600", "--cert-reload", "3600"],
                &["--ticket-reload", "3600"],
            ]
            .concat(),
        ),
        dir.path(),
    );
    let mut open = serve.connect(&f.client(None));
    let echo = Frame::new(FrameType::Echo, b"before".to_vec());
    open.write_all(&encode(std::slice::from_ref(&echo)))
        .unwrap();
    assert_eq!(read_frames(&mut open, 1)[0], echo);

    // A renewed certificate, an allow-list without device-1, new ticket keys; then SIGHUP.
    let renewed = renew_server_certificate(dir.path(), None);
    std::fs::write(&allow, "# nobody\n").unwrap();
    std::fs::write(&keys, [9u8; 96]).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Each file has its own watcher; all three read at once and say what they installed.
    for line in [
        "tether serve: SIGHUP: reading",
        "installed new ticket keys",
        "installed a new allow-list",
        "installed a changed server certificate",
    ] {
        serve.wait_for(line, Duration::from_secs(10));
    }

    // The open session is ended with access_denied, long before the next periodic read.
    open.set_io_timeout(Some(Duration::from_secs(10)));
    let read = open.read(&mut [0u8; 16]);
    assert!(
        read.as_ref()
            .is_err_and(|e| e.to_string().contains("access_denied")),
        "expected access_denied: {read:?}\n{}",
        serve.output()
    );
    // A new handshake meets the renewed certificate, and the new list refuses the device.
    let mut again = serve.connect(&f.client(None));
    assert_eq!(
        again.session().peer_certificates().unwrap()[0].as_ref(),
        renewed.cert_der.as_slice()
    );
    let _ = again.write_all(&encode(std::slice::from_ref(&echo)));
    assert!(again.read(&mut [0u8; 16]).is_err());
    let (_, metrics) = http_get(serve.http.unwrap(), "/metrics");
    assert!(
        metrics.contains("tether_certificate_reloads_total{result=\"installed\"} 1"),
        "{metrics}"
    );
    // Still serving: SIGHUP does not stop it.
    assert!(serve.child.try_wait().unwrap().is_none());
}

/// `--log-format json`: every log line is one JSON object a collector can read, with the
/// message's fields (here a refused device: its address, id and the reason).
#[test]
fn json_logs_are_one_object_a_line_with_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let allow = dir.path().join("allow.txt");
    std::fs::write(&allow, "device-9\n").unwrap();
    let base = f.tls_args();
    let mut serve = Serve::start(
        &args(
            &base,
            &[
                &LOCAL[..],
                &["--allow", allow.to_str().unwrap(), "--log-format", "json"],
            ]
            .concat(),
        ),
        dir.path(),
    );
    let mut s = serve.connect(&f.client(Some(TlsVersion::Tls13)));
    assert!(s.read(&mut [0u8; 16]).is_err(), "device-1 is not listed");
    let line = serve.wait_for("device refused", Duration::from_secs(10));
    let record: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(record["level"], "INFO", "{line}");
    let fields = &record["fields"];
    assert_eq!(fields["message"], "device refused", "{line}");
    assert_eq!(fields["reason"], "not_allowed", "{line}");
    assert_eq!(fields["device"], "device-1", "{line}");
    assert!(
        fields["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert!(record["timestamp"].is_string(), "{line}");
    // Every log line is such an object: only the start-up lines on stdout ("tether serve:
    // ...") are text.
    let output = serve.output();
    let logs: Vec<&str> = output
        .lines()
        .filter(|l| !l.starts_with("tether serve: "))
        .collect();
    assert!(!logs.is_empty(), "{output}");
    for l in logs {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn bad_config_missing_certificate_and_port_in_use_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        std::fs::write(d.join(name), text).unwrap();
        d.join(name).to_str().unwrap().to_owned()
    };

    let unknown = write(
        "unknown.toml",
        "listen = \"127.0.0.1:0\"\n\nbogus-key = 3\n",
    );
    let err = fails(&["--config", &unknown], d);
    assert!(
        err.contains("line 3") && err.contains("`bogus-key`"),
        "{err}"
    );

    let bad_value = write("bad.toml", "# limits\nmax-connections = \"many\"\n");
    let err = fails(&["--config", &bad_value], d);
    assert!(
        err.contains("line 2") && err.contains("max-connections"),
        "{err}"
    );

    let bad_version = write("version.toml", "\n\nmin-tls = \"1.1\"\n");
    let err = fails(&["--config", &bad_version], d);
    assert!(
        err.contains("line 3") && err.contains("min-tls") && err.contains("1.2 or 1.3"),
        "{err}"
    );

    let bad_crypto = write("crypto.toml", "crypto = \"openssl\"\n");
    let err = fails(&["--config", &bad_crypto], d);
    assert!(
        err.contains("line 1") && err.contains("crypto") && err.contains("\"ring\" or \"aws-lc\""),
        "{err}"
    );
    // A bad flag value: clap's error (with its usage line), exit status 2.
    let err = bad_flag(&["--crypto", "boringssl"], d);
    assert!(
        err.contains("invalid value 'boringssl' for '--crypto")
            && err.contains("\"ring\" or \"aws-lc\""),
        "{err}"
    );

    let format = write(
        "format.toml",
        "log-level = \"info\"\nlog-format = \"xml\"\n",
    );
    let err = fails(&["--config", &format], d);
    assert!(
        err.contains("line 2") && err.contains("log-format") && err.contains("`json`"),
        "{err}"
    );

    let zero = write("zero.toml", "max-per-ip = 0\n");
    let err = fails(&["--config", &zero], d);
    assert!(
        err.contains("line 1") && err.contains("max-per-ip"),
        "{err}"
    );
    let err = bad_flag(&["--workers", "0"], d);
    assert!(
        err.contains("invalid value '0' for '--workers")
            && err.contains("whole number of at least 1"),
        "{err}"
    );
    let no_workers = write("workers.toml", "\nworkers = 0\n");
    let err = fails(&["--config", &no_workers], d);
    assert!(err.contains("line 2") && err.contains("workers"), "{err}");

    let err = fails(&["--config", "no-such.toml"], d);
    assert!(err.contains("cannot read config no-such.toml"), "{err}");

    let err = fails(
        &[
            "--cert",
            "missing.pem",
            "--key",
            "missing.key",
            "--ca",
            "ca.pem",
        ],
        d,
    );
    assert!(err.contains("cannot read certificate missing.pem"), "{err}");

    let f = files(d);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let base = f.tls_args();
    let err = fails(&args(&base, &["--listen", &addr, "--http", "off"]), d);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("in use"), "{err}");

    let err = fails(
        &[
            "--cert",
            f.cert.to_str().unwrap(),
            "--key",
            f.key.to_str().unwrap(),
        ],
        d,
    );
    assert!(err.contains("--ca"), "{err}");
}

/// The DTLS address from the "listening" line (`..., DTLS 1.2-1.3 on udp ADDR, ...`).
fn dtls_addr(serve: &mut Serve) -> Option<SocketAddr> {
    let line = serve.wait_for("tether serve: listening on ", Duration::from_secs(5));
    line.split(" on udp ")
        .nth(1)
        .map(|rest| rest.split(',').next().unwrap().trim().parse().unwrap())
}

#[test]
fn dtls_listener_on_the_tls_port_by_default_moved_by_flag_or_file_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let base = f.tls_args();
    let dtls_client =
        tether::dtls::ClientConfig::builder(Trust::from_pem(f.ca_pem.as_bytes()).unwrap())
            .identity(
                Identity::from_pem(f.device_cert.as_bytes(), f.device_key.as_bytes()).unwrap(),
            )
            .handshake_timeout(Duration::from_secs(20))
            .build()
            .unwrap();
    let echo = |addr: SocketAddr| {
        let mut s = tether::dtls::connect_named(&addr.to_string(), "localhost", &dtls_client)
            .unwrap_or_else(|e| panic!("DTLS connect to {addr}: {e}"));
        s.set_io_timeout(Some(Duration::from_secs(20)));
        s.send(&encode(&[Frame::new(
            FrameType::Echo,
            b"over udp".to_vec(),
        )]))
        .unwrap();
        let mut buf = [0u8; 256];
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &encode(&[Frame::new(FrameType::Echo, b"over udp".to_vec())])[..]
        );
        s.close().unwrap();
    };

    // Default: UDP on the TLS listener's port.
    let mut serve = Serve::start(&args(&base, &LOCAL), dir.path());
    let addr = dtls_addr(&mut serve).expect("a DTLS listener by default");
    assert_eq!(addr, serve.tls, "{}", serve.output());
    assert!(
        serve.output().contains("DTLS 1.2-1.3 on udp"),
        "{}",
        serve.output()
    );
    echo(addr);
    let (_, metrics) = http_get(serve.http.unwrap(), "/metrics");
    assert!(
        metrics
            .contains("tether_frames_total{transport=\"dtls\",direction=\"in\",type=\"echo\"} 1"),
        "{metrics}"
    );
    drop(serve);

    // Moved by flag.
    let port = testpeers::free_udp_port().to_string();
    let at = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(
        &args(&base, &[&LOCAL[..], &["--dtls-listen", &at]].concat()),
        dir.path(),
    );
    let addr = dtls_addr(&mut serve).unwrap();
    assert_eq!(addr.to_string(), at);
    echo(addr);
    drop(serve);

    // Off in the configuration file (with the handshake limit key, which it accepts).
    std::fs::write(
        dir.path().join("gateway.toml"),
        "dtls-listen = \"off\"\ndtls-max-handshaking = 16\n",
    )
    .unwrap();
    let config = dir.path().join("gateway.toml");
    let mut serve = Serve::start(
        &args(
            &base,
            &[&LOCAL[..], &["--config", config.to_str().unwrap()]].concat(),
        ),
        dir.path(),
    );
    assert_eq!(dtls_addr(&mut serve), None);
    assert!(serve.output().contains("no DTLS"), "{}", serve.output());
    drop(serve);

    // A bad value names the key and its line.
    std::fs::write(
        dir.path().join("bad.toml"),
        "\ndtls-listen = \"udp please\"\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    let err = fails(
        &args(
            &base,
            &[&LOCAL[..], &["--config", bad.to_str().unwrap()]].concat(),
        ),
        dir.path(),
    );
    assert!(
        err.contains("line 2") && err.contains("dtls-listen"),
        "{err}"
    );
}

#[test]
fn dev_pki_prints_a_dtls_device_command_that_works() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&LOCAL, dir.path());
    let out = serve.output();
    let command = out
        .lines()
        .find(|l| l.contains("openssl s_client -dtls1_2"))
        .unwrap_or_else(|| panic!("no DTLS command:\n{out}"))
        .trim()
        .to_owned();
    let ran = Command::new("sh")
        .args(["-c", &command])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&ran.stdout);
    assert!(
        shown.contains("\\0  \\0  \\0 001  \\0  \\0  \\0 005   h   e   l   l   o  \\0  \\0  \\0"),
        "{command}\n{shown}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let (_, metrics) = http_get(serve.http.unwrap(), "/metrics");
    assert!(
        metrics.contains("tether_handshakes_total{transport=\"dtls\",result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_kernel_picked_port_taken_on_udp_is_picked_again_for_tls_and_dtls() {
    // `--listen ADDR:0` lets the kernel pick the TCP port and the DTLS listener takes the same
    // number on UDP, where another socket may hold it. In a namespace whose ephemeral range is
    // four ports, two held on UDP by other gateways (the odd ones, which Linux tries first for
    // an unbound port), the gateway must still come up, on one even port for both.
    if !testpeers::netns::skip_or_fail_netns(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let base = f.tls_args();
    let ns = testpeers::netns::Netns::new("port").unwrap();
    // The namespace's own sysctl, written from inside it.
    let status = ns
        .command("sh")
        .args([
            "-c",
            "echo '40000 40003' > /proc/sys/net/ipv4/ip_local_port_range",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let serve_in_ns = |name: &str, more: &[&str]| {
        let mut all = vec!["serve"];
        all.extend(args(&base, &["--http", "off"]));
        all.extend_from_slice(more);
        let peer = ns.spawn(name, TETHER, &all).unwrap();
        peer.wait_for_output("listening on ", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", peer.output_so_far()));
        peer
    };
    let _holders = [
        serve_in_ns(
            "udp-40001",
            &[
                "--listen",
                "127.0.0.1:50001",
                "--dtls-listen",
                "127.0.0.1:40001",
            ],
        ),
        serve_in_ns(
            "udp-40003",
            &[
                "--listen",
                "127.0.0.1:50003",
                "--dtls-listen",
                "127.0.0.1:40003",
            ],
        ),
    ];
    let picked = serve_in_ns("picked", &["--listen", "127.0.0.1:0"]);
    let out = picked.output_so_far();
    let line = out.lines().find(|l| l.contains("listening on ")).unwrap();
    let tls: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let udp: SocketAddr = line
        .split(" on udp ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(tls.port(), udp.port(), "{line}");
    assert!([40000, 40002].contains(&tls.port()), "{line}");
}

#[test]
fn connect_reports_a_refusal_that_comes_after_a_tls13_handshake() {
    // TLS 1.3: the client's handshake completes before the gateway has checked the client.
    // tether connect waits for the verdict instead of printing "connected".
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let device_cert = dir.path().join("device-1.pem");
    let device_key = dir.path().join("device-1.key");
    std::fs::write(&device_cert, &f.device_cert).unwrap();
    std::fs::write(&device_key, &f.device_key).unwrap();
    let allow = dir.path().join("allow.txt");
    std::fs::write(&allow, "device-9\n").unwrap();
    let base = f.tls_args();
    let mut serve = Serve::start(&args(&base, &LOCAL), dir.path());
    let mut listed_only = Serve::start(
        &args(
            &base,
            &[&LOCAL[..], &["--allow", allow.to_str().unwrap()]].concat(),
        ),
        dir.path(),
    );
    let connect = |target: SocketAddr, more: &[&str]| {
        let o = Command::new(TETHER)
            .args([
                "connect",
                &target.to_string(),
                "--ca",
                f.ca.to_str().unwrap(),
            ])
            .args(more)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let with_cert = [
        "--cert",
        device_cert.to_str().unwrap(),
        "--key",
        device_key.to_str().unwrap(),
    ];

    let (ok, out, err) = connect(serve.tls, &[]);
    assert!(!ok, "no certificate, yet: {out}");
    assert!(!out.contains("connected to"), "{out}");
    assert!(
        err.contains("certificate_required") && err.contains("--cert FILE --key FILE"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (ok, out, err) = connect(listed_only.tls, &with_cert);
    assert!(!ok, "not on the allow-list, yet: {out}");
    assert!(
        err.contains("refused the session after the handshake")
            && err.contains("access_denied (49)")
            && err.contains("allow-list"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // DTLS 1.3 likewise.
    let udp = dtls_addr(&mut listed_only).expect("a DTLS listener");
    let (ok, out, err) = connect(udp, &[&["--dtls"][..], &with_cert].concat());
    assert!(!ok, "not on the allow-list, yet (DTLS): {out}");
    assert!(
        err.contains("over DTLS") && err.contains("right after the handshake"),
        "{err}"
    );
    // A device of another CA over DTLS 1.3: the gateway's alert cannot be protected and the
    // client must ignore it, but it names it once the silence that follows times out.
    let stranger = tether_pki::Ca::init(tether_pki::KeyKind::EcdsaP256, "another CA")
        .unwrap()
        .issue_client("device-1", &tether_pki::IssueOptions::default())
        .unwrap();
    let (stranger_cert, stranger_key) = (dir.path().join("s.pem"), dir.path().join("s.key"));
    std::fs::write(&stranger_cert, &stranger.cert_pem).unwrap();
    std::fs::write(&stranger_key, &stranger.key_pem).unwrap();
    let udp = dtls_addr(&mut serve).expect("a DTLS listener");
    let (ok, out, err) = connect(
        udp,
        &[
            "--dtls",
            "--min-tls",
            "1.3",
            "--cert",
            stranger_cert.to_str().unwrap(),
            "--key",
            stranger_key.to_str().unwrap(),
        ],
    );
    assert!(!ok, "a device of another CA, yet (DTLS 1.3): {out}");
    assert!(
        err.contains("unknown_ca (48) without protection") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (ok, out, err) = connect(serve.tls, &with_cert);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("TLSv1.3") && out.contains("verification  OK"),
        "{out}"
    );
}
