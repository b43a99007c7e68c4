//! Helpers shared by the CLI tests that run the built `tether` binary.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `tether ARGS` and waits for it.
pub fn tether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .output()
        .expect("run tether")
}

/// Its stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `tether pki` makes a CA, a server certificate (localhost, 127.0.0.1), a device certificate
/// `device-1`, and a second, unrelated CA in `DIR/other`.
pub fn pki(dir: &Path) {
    let d = dir.to_str().unwrap();
    let other = dir.join("other");
    for args in [
        vec!["pki", "init", "--dir", d],
        vec![
            "pki",
            "issue",
            "server",
            "--dir",
            d,
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
        ],
        vec!["pki", "issue", "client", "--dir", d, "--id", "device-1"],
        vec![
            "pki",
            "init",
            "--dir",
            other.to_str().unwrap(),
            "--cn",
            "another CA",
        ],
    ] {
        let o = tether(&args);
        assert!(o.status.success(), "{args:?}: {:?}", text(&o));
    }
}
