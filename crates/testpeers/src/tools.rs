//! Finding peer binaries, and the CI rule: a missing peer fails under `CI=true`, skips elsewhere.

use std::io::Write;
use std::path::PathBuf;

/// The Debian package that provides `tool` (what `scripts/test` installs), or `tool` itself when
/// the name is not known here.
pub fn debian_package(tool: &str) -> &str {
    match tool {
        "openssl" => "openssl",
        "gnutls-serv" | "gnutls-cli" | "certtool" => "gnutls-bin",
        "mosquitto" => "mosquitto",
        "mosquitto_pub" | "mosquitto_sub" => "mosquitto-clients",
        "nginx" => "nginx",
        "dnsmasq" => "dnsmasq",
        "ip" | "ss" => "iproute2",
        "haproxy" => "haproxy",
        other => other,
    }
}

/// The path of the executable `name` found in `PATH` (or `name` itself when it contains a `/`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &PathBuf| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(is_exe)
}

/// Whether the peer binary `name` is installed (found in `PATH`).
pub fn peer_available(name: &str) -> bool {
    find_tool(name).is_some()
}

/// `Ok(())` when `name` is installed, else a message saying how to install it.
pub fn require_tool(name: &str) -> Result<(), String> {
    if peer_available(name) {
        Ok(())
    } else {
        Err(format!(
            "{name} not found: scripts/test installs it with apt-get (package {})",
            debian_package(name)
        ))
    }
}

/// Whether this run is under CI: the `CI` variable is `true`, `1` or `yes` (any case).
pub fn on_ci() -> bool {
    std::env::var("CI")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(false)
}

/// `true` when the test can run because `name` is installed.
///
/// When it is missing: under `CI=true` this panics (scripts/test installs every peer, so a missing
/// one is a broken setup, not a reason to skip); elsewhere it prints to the real stderr (not the
/// captured test output) that the test is skipped and why, and returns `false`.
/// Use it as `if !skip_or_fail("gnutls-serv") { return; }`.
///
/// # Panics
/// When `name` is missing and [`on_ci`] is true.
#[track_caller]
pub fn skip_or_fail(name: &str) -> bool {
    skip_or_fail_all(&[name])
}

/// [`skip_or_fail`] for several tools: `true` when all are installed.
///
/// # Panics
/// When one is missing and [`on_ci`] is true.
#[track_caller]
pub fn skip_or_fail_all(names: &[&str]) -> bool {
    let missing: Vec<String> = names
        .iter()
        .filter_map(|name| require_tool(name).err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    if on_ci() {
        panic!("{why} (CI=true: a missing test peer is a failure, not a skip)");
    }
    let caller = std::panic::Location::caller();
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    // Straight to fd 2, so the note shows although the test harness captures print output.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test} ({caller}): {why}; set CI=true to make this a failure"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_and_messages() {
        assert_eq!(debian_package("gnutls-serv"), "gnutls-bin");
        assert_eq!(debian_package("ip"), "iproute2");
        let err = require_tool("surely-not-a-real-tool-xyz").unwrap_err();
        assert!(err.starts_with("surely-not-a-real-tool-xyz not found: scripts/test installs it"));
        assert!(peer_available("sh"));
        assert!(find_tool("/bin/sh").is_some());
    }
}
