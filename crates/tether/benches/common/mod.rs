//! What the timed benchmarks (`core.rs`, `tokio.rs`) share: the test certificates, the
//! quick/rounds switches, and the statistics of their rounds.

#![allow(dead_code)]

pub const CA: &[u8] = include_bytes!("../../tests/data/ca.pem");
pub const SERVER_CERT: &[u8] = include_bytes!("../../tests/data/server.pem");
pub const SERVER_KEY: &[u8] = include_bytes!("../../tests/data/server.key");
pub const NAME: &str = "localhost";

/// ring's provider with the suites in tether's order (Mozilla's "intermediate": AES-128-GCM
/// first), so that rustls negotiates the suite tether does.
pub fn rustls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    std::sync::Arc::new(provider)
}

/// The test CA as rustls' only root.
pub fn rustls_roots() -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(CA) {
        roots.add(cert.expect("ca.pem")).expect("CA root");
    }
    roots
}

/// A smoke run: `--quick` or `TETHER_BENCH_QUICK=1`.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
        || std::env::var("TETHER_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `TETHER_BENCH_ROUNDS` if set, else `default`; at least 1.
pub fn rounds(default: usize) -> usize {
    std::env::var("TETHER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// The `q` quantile (0..=1) by linear interpolation.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// This thread's on-CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`: time spent
/// descheduled while other processes ran is left out), user and system. Unix only.
#[cfg(unix)]
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
