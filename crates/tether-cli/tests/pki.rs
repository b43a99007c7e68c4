//! `tether pki` end to end: the built binary in a temporary directory, checked with openssl.

use std::path::Path;
use std::process::{Command, Output};

fn tether(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run tether")
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = tether(args, cwd);
    assert!(
        out.status.success(),
        "tether {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// openssl is a Debian package that scripts/test installs; outside CI a missing one skips.
fn openssl() -> Option<&'static str> {
    const OPENSSL: &str = "openssl";
    let found = Command::new(OPENSSL)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(OPENSSL);
    }
    // The same spellings of CI as scripts/test accepts.
    let ci = std::env::var("CI").unwrap_or_default().to_ascii_lowercase();
    assert!(
        !matches!(ci.as_str(), "true" | "1" | "yes"),
        "openssl is missing: install it (apt-get install openssl), or run scripts/test"
    );
    eprintln!("skipping the openssl checks: openssl is not installed");
    None
}

fn sh(script: &str, cwd: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_issue_pin_and_verify_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();

    let out = ok(&["pki", "init", "--dir", "pki"], cwd);
    assert!(
        out.contains("pki/ca.pem") && out.contains("pki/ca.key"),
        "{out}"
    );

    let out = ok(
        &[
            "pki",
            "issue",
            "server",
            "--dir",
            "pki",
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
        ],
        cwd,
    );
    assert!(
        out.contains("pki/server.pem") && out.contains("pki/server.key"),
        "{out}"
    );
    let out = ok(
        &["pki", "issue", "client", "--dir", "pki", "--id", "device-1"],
        cwd,
    );
    assert!(out.contains("pki/device-1.pem"), "{out}");

    let dir = cwd.join("pki");
    for file in ["ca", "server", "device-1"] {
        let cert = std::fs::read_to_string(dir.join(format!("{file}.pem"))).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{file}");
        let key = std::fs::read_to_string(dir.join(format!("{file}.key"))).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{file}");
        #[cfg(unix)]
        assert_eq!(mode(&dir.join(format!("{file}.key"))), 0o600, "{file}.key");
    }

    let pin = ok(&["pki", "pin", "server.pem"], &dir);
    let pin = pin.strip_suffix('\n').expect("one line");
    assert!(!pin.contains('\n'), "one line: {pin:?}");
    assert!(pin.starts_with("sha256/"), "{pin}");

    let show = ok(&["pki", "show", "pki/server.pem"], cwd);
    assert!(show.contains("CN=localhost"), "{show}");
    assert!(show.contains("localhost, 127.0.0.1"), "{show}");
    assert!(show.contains(pin), "{show}");

    let Some(openssl) = openssl() else { return };

    let verified = sh(&format!("{openssl} verify -CAfile ca.pem server.pem"), &dir);
    assert!(verified.contains("server.pem: OK"), "{verified}");
    let verified = sh(
        &format!("{openssl} verify -CAfile ca.pem -purpose sslclient device-1.pem"),
        &dir,
    );
    assert!(verified.contains("device-1.pem: OK"), "{verified}");
    // serverAuth only: openssl must refuse the server certificate for client use.
    let refused = Command::new(openssl)
        .args([
            "verify",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "sslclient",
            "server.pem",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "server.pem passed as a client certificate"
    );

    let san = sh(
        &format!("{openssl} x509 -in server.pem -noout -ext subjectAltName"),
        &dir,
    );
    assert!(san.contains("DNS:localhost"), "{san}");
    assert!(san.contains("IP Address:127.0.0.1"), "{san}");

    let ca_text = sh(&format!("{openssl} x509 -in ca.pem -noout -text"), &dir);
    assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");

    let expected = sh(
        &format!(
            "{openssl} x509 -in server.pem -pubkey -noout | {openssl} pkey -pubin -outform der \
             | {openssl} dgst -sha256 -binary | base64"
        ),
        &dir,
    );
    assert_eq!(pin, format!("sha256/{}", expected.trim()));

    // The key written is the certificate's key.
    let from_key = sh(
        &format!(
            "{openssl} pkey -in server.key -pubout -outform der | {openssl} dgst -sha256 -binary | base64"
        ),
        &dir,
    );
    assert_eq!(from_key, expected);
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(&["pki", "init", "--dir", "pki", "--cn", "first CA"], cwd);
    let first = std::fs::read_to_string(cwd.join("pki/ca.pem")).unwrap();

    let out = tether(&["pki", "init", "--dir", "pki"], cwd);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pki/ca.pem"), "names the file: {stderr}");
    assert!(stderr.contains("--force"), "says what to do: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_eq!(
        std::fs::read_to_string(cwd.join("pki/ca.pem")).unwrap(),
        first
    );

    ok(
        &[
            "pki",
            "init",
            "--dir",
            "pki",
            "--cn",
            "second CA",
            "--force",
        ],
        cwd,
    );
    let second = std::fs::read_to_string(cwd.join("pki/ca.pem")).unwrap();
    assert_ne!(second, first);
    let show = ok(&["pki", "show", "pki/ca.pem"], cwd);
    assert!(show.contains("CN=second CA"), "{show}");
    #[cfg(unix)]
    assert_eq!(mode(&cwd.join("pki/ca.key")), 0o600);

    // Issuing twice is refused the same way.
    ok(
        &["pki", "issue", "client", "--dir", "pki", "--id", "d1"],
        cwd,
    );
    let out = tether(
        &["pki", "issue", "client", "--dir", "pki", "--id", "d1"],
        cwd,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pki/d1.pem") && stderr.contains("--force"),
        "{stderr}"
    );
    ok(
        &[
            "pki", "issue", "client", "--dir", "pki", "--id", "d1", "--force",
        ],
        cwd,
    );
}

#[test]
fn errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();

    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "pki",
                "issue",
                "server",
                "--dir",
                "nope",
                "--san",
                "localhost",
            ],
            "tether pki init --dir nope",
        ),
        (
            &["pki", "issue", "client", "--dir", "nope", "--id", "bad id"],
            "invalid device id \"bad id\"",
        ),
        (&["pki", "pin", "missing.pem"], "missing.pem"),
    ];
    for (args, expected) in cases {
        let out = tether(args, cwd);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }

    ok(&["pki", "init", "--dir", "pki"], cwd);
    let out = tether(
        &[
            "pki",
            "issue",
            "server",
            "--dir",
            "pki",
            "--san",
            "two words",
        ],
        cwd,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"two words\""), "{stderr}");
    assert!(!cwd.join("pki/server.pem").exists());

    // --san is required.
    let out = tether(&["pki", "issue", "server", "--dir", "pki"], cwd);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--san"));

    // A key file is not a certificate.
    let out = tether(&["pki", "pin", "pki/ca.key"], cwd);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no certificate"));
}

#[test]
fn key_kinds_days_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(
        &[
            "pki", "init", "--dir", "pki", "--key", "ed25519", "--days", "30",
        ],
        cwd,
    );
    let show = ok(&["pki", "show", "pki/ca.pem"], cwd);
    assert!(show.contains("key:        Ed25519"), "{show}");

    // Several values after one --san, a file name, a key kind.
    ok(
        &[
            "pki", "issue", "server", "--dir", "pki", "--name", "gw1", "--san", "gw.local", "::1",
            "--key", "rsa2048", "--days", "400",
        ],
        cwd,
    );
    let show = ok(&["pki", "show", "pki/gw1.pem"], cwd);
    assert!(show.contains("SANs:       gw.local, ::1"), "{show}");
    assert!(show.contains("key:        RSA 2048"), "{show}");
    assert!(show.contains("issuer:     CN=tether CA"), "{show}");

    // rsa4096 parses (generation itself is slow in a debug build and not repeated here);
    // an unknown kind does not.
    let out = tether(
        &[
            "pki", "issue", "client", "--dir", "nope", "--id", "d", "--key", "rsa4096",
        ],
        cwd,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no CA in nope"),
        "rsa4096 accepted: {stderr}"
    );
    let out = tether(
        &[
            "pki", "issue", "client", "--dir", "pki", "--id", "d", "--key", "dsa",
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ecdsa-p256"));

    let out = tether(&["pki", "init", "--dir", "x", "--days", "0"], cwd);
    assert!(!out.status.success());
}

#[test]
fn two_default_cas_never_share_a_name() {
    // Verifiers find issuers by name: two CAs called "tether CA" would make a certificate from
    // the wrong one fail as a bad signature instead of an unknown issuer.
    let tmp = tempfile::tempdir().unwrap();
    ok(&["pki", "init", "--dir", "a"], tmp.path());
    ok(&["pki", "init", "--dir", "b"], tmp.path());
    let subject = |d: &str| {
        let show = ok(&["pki", "show", &format!("{d}/ca.pem")], tmp.path());
        show.lines()
            .find(|l| l.starts_with("subject:"))
            .unwrap()
            .to_string()
    };
    let (a, b) = (subject("a"), subject("b"));
    assert!(a.starts_with("subject:    CN=tether CA "), "{a}");
    assert_ne!(a, b);
}
