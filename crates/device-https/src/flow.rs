//! The device's network flow: DHCP, DNS (with fallback addresses), TCP, TLS 1.3, one HTTPS
//! request, close_notify. Written against smoltcp and `tether::smoltcp` only (`core` + `alloc`,
//! no `std`), as it would run on a microcontroller; `main.rs` supplies the TAP device, the
//! clock and the sleep.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::phy::Device;
use smoltcp::socket::{dhcpv4, dns};
use smoltcp::wire::{DnsQueryType, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use tether::smoltcp::{Stack, TcpTransport};
use tether::socket::TlsSocket;
use tether::{ClientConfig, Error as TlsError, TlsVersion};

use crate::http::{self, HttpError, Progress};

/// What the flow needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server's name: resolved by DNS, sent as SNI and Host, checked in its certificate.
    pub host: String,
    /// The server's TCP port.
    pub port: u16,
    /// The request path.
    pub path: String,
    /// Addresses to use when DNS fails (timeout or no answer).
    pub fallback: Vec<Ipv4Address>,
    /// A DNS server to use instead of the ones DHCP gives.
    pub dns_server: Option<Ipv4Address>,
    /// Deadlines, in milliseconds.
    pub dhcp_timeout_ms: u64,
    /// DNS deadline.
    pub dns_timeout_ms: u64,
    /// TCP connect deadline (per address).
    pub connect_timeout_ms: u64,
    /// Deadline of each read and write after the handshake.
    pub io_timeout_ms: u64,
    /// The TCP socket's local port.
    pub local_port: u16,
    /// The largest response accepted.
    pub max_response: usize,
}

/// What DHCP gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Address and prefix.
    pub address: Ipv4Cidr,
    /// Default gateway.
    pub router: Option<Ipv4Address>,
    /// DNS servers.
    pub dns_servers: Vec<Ipv4Address>,
}

/// How the server's address was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The host is an address.
    Literal,
    /// DNS answered.
    Dns,
    /// DNS failed (the reason) and the fallback addresses were used.
    Fallback(FlowError),
}

/// Everything the flow reports on success.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The DHCP lease.
    pub lease: Lease,
    /// The address connected to.
    pub server: Ipv4Address,
    /// How it was found.
    pub resolved: Resolved,
    /// The negotiated TLS version.
    pub version: Option<TlsVersion>,
    /// The response.
    pub response: http::Response,
}

/// The distinct failures of the flow. Each has its own exit code ([`FlowError::exit_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowError {
    /// No DHCP lease within the deadline.
    DhcpTimeout {
        /// The deadline.
        ms: u64,
    },
    /// The DNS query got no answer within the deadline (and there is no fallback).
    DnsTimeout {
        /// The name.
        host: String,
        /// The server asked.
        server: Ipv4Address,
        /// The deadline.
        ms: u64,
    },
    /// The DNS query failed: no such name, no address, or no DNS server (and no fallback).
    DnsFailed {
        /// The name.
        host: String,
        /// Why.
        reason: String,
    },
    /// No TCP connection to any address.
    TcpConnect {
        /// What the last attempt said.
        reason: String,
    },
    /// The TLS handshake failed for a reason other than the server's certificate.
    TlsHandshake(TlsError),
    /// The server's certificate (or key, with a pin) was rejected.
    CertificateRejected(TlsError),
    /// Sending the request or reading the response failed.
    Http(String),
}

impl FlowError {
    /// The process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            FlowError::DhcpTimeout { .. } => 10,
            FlowError::DnsTimeout { .. } => 11,
            FlowError::DnsFailed { .. } => 12,
            FlowError::TcpConnect { .. } => 13,
            FlowError::TlsHandshake(_) => 14,
            FlowError::CertificateRejected(_) => 15,
            FlowError::Http(_) => 16,
        }
    }

    /// A short stable name, printed first in the message.
    pub fn name(&self) -> &'static str {
        match self {
            FlowError::DhcpTimeout { .. } => "DHCP timeout",
            FlowError::DnsTimeout { .. } => "DNS timeout",
            FlowError::DnsFailed { .. } => "DNS failure",
            FlowError::TcpConnect { .. } => "TCP connect failure",
            FlowError::TlsHandshake(_) => "TLS handshake failure",
            FlowError::CertificateRejected(_) => "certificate rejected",
            FlowError::Http(_) => "HTTP failure",
        }
    }

    fn from_tls(e: TlsError) -> FlowError {
        match e {
            TlsError::Certificate(_)
            | TlsError::PinMismatch { .. }
            | TlsError::TofuKeyChanged { .. } => FlowError::CertificateRejected(e),
            other => FlowError::TlsHandshake(other),
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.name())?;
        match self {
            FlowError::DhcpTimeout { ms } => write!(
                f,
                "no DHCP lease within {ms} ms; check that a DHCP server serves this link \
                 (and the TAP device is attached to it), or raise --dhcp-timeout"
            ),
            FlowError::DnsTimeout { host, server, ms } => write!(
                f,
                "no answer for {host} from DNS server {server} within {ms} ms; check the DNS \
                 server, or give --fallback addresses"
            ),
            FlowError::DnsFailed { host, reason } => write!(
                f,
                "cannot resolve {host}: {reason}; check the name, or give --fallback addresses"
            ),
            FlowError::TcpConnect { reason } => f.write_str(reason),
            FlowError::TlsHandshake(e) => write!(f, "{e}"),
            FlowError::CertificateRejected(e) => write!(f, "{e}; nothing was sent to the server"),
            FlowError::Http(s) => f.write_str(s),
        }
    }
}

/// Runs DHCP until the interface is configured: address, default route.
pub fn dhcp<D: Device, N: Fn() -> u64, S: FnMut(u64)>(
    stack: &mut Stack<'_, D, N, S>,
    timeout_ms: u64,
) -> Result<Lease, FlowError> {
    let mut socket = dhcpv4::Socket::new();
    // Short retries: a device that just came up may lose its first DISCOVER.
    let mut retry = dhcpv4::RetryConfig::default();
    retry.discover_timeout = smoltcp::time::Duration::from_millis(1_000);
    retry.initial_request_timeout = smoltcp::time::Duration::from_millis(1_000);
    socket.set_retry_config(retry);
    let handle = stack.sockets.add(socket);
    let deadline = stack.now_ms().saturating_add(timeout_ms);
    let r = stack.wait_for(Some(deadline), |s| {
        match s.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            Some(dhcpv4::Event::Configured(config)) => Some(Lease {
                address: config.address,
                router: config.router,
                dns_servers: config.dns_servers.iter().copied().collect(),
            }),
            _ => None,
        }
    });
    // The lease is kept for this one request: no renewal is needed, so the socket goes.
    stack.sockets.remove(handle);
    let lease = r.map_err(|_| FlowError::DhcpTimeout { ms: timeout_ms })?;
    stack.iface.update_ip_addrs(|addrs| {
        addrs.clear();
        let _ = addrs.push(IpCidr::Ipv4(lease.address));
    });
    match lease.router {
        Some(router) => {
            let _ = stack.iface.routes_mut().add_default_ipv4_route(router);
        }
        None => {
            stack.iface.routes_mut().remove_default_ipv4_route();
        }
    }
    Ok(lease)
}

/// Resolves `host` (A records) by asking `server`.
pub fn resolve<D: Device, N: Fn() -> u64, S: FnMut(u64)>(
    stack: &mut Stack<'_, D, N, S>,
    host: &str,
    server: Ipv4Address,
    timeout_ms: u64,
) -> Result<Vec<Ipv4Address>, FlowError> {
    let servers = [IpAddress::Ipv4(server)];
    let handle = stack.sockets.add(dns::Socket::new(&servers, vec![None]));
    let r = resolve_with(stack, handle, host, server, timeout_ms);
    stack.sockets.remove(handle);
    r
}

fn resolve_with<D: Device, N: Fn() -> u64, S: FnMut(u64)>(
    stack: &mut Stack<'_, D, N, S>,
    handle: SocketHandle,
    host: &str,
    server: Ipv4Address,
    timeout_ms: u64,
) -> Result<Vec<Ipv4Address>, FlowError> {
    let failed = |reason: String| FlowError::DnsFailed {
        host: String::from(host),
        reason,
    };
    let cx = stack.iface.context();
    let query = stack
        .sockets
        .get_mut::<dns::Socket>(handle)
        .start_query(cx, host, DnsQueryType::A)
        .map_err(|e| failed(format!("not a name that can be looked up ({e:?})")))?;
    let deadline = stack.now_ms().saturating_add(timeout_ms);
    let r = stack.wait_for(Some(deadline), |s| {
        match s
            .sockets
            .get_mut::<dns::Socket>(handle)
            .get_query_result(query)
        {
            Err(dns::GetQueryResultError::Pending) => None,
            Ok(addrs) => Some(Ok(addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddress::Ipv4(v4) => Some(*v4),
                    #[allow(unreachable_patterns)]
                    _ => None,
                })
                .collect::<Vec<_>>())),
            Err(dns::GetQueryResultError::Failed) => Some(Err(())),
        }
    });
    match r {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(failed(format!("{server} returned no IPv4 address"))),
        Ok(Err(())) => Err(failed(format!(
            "{server} answered that the name does not exist (or has no IPv4 address)"
        ))),
        // The caller removes the socket, and the query with it.
        Err(_) => Err(FlowError::DnsTimeout {
            host: String::from(host),
            server,
            ms: timeout_ms,
        }),
    }
}

/// The whole flow: DHCP, DNS (or fallback), TCP, TLS, GET, read, close_notify. `tcp` is a TCP
/// socket in `stack.sockets`; `log` gets one line per step.
pub fn run<D: Device, N: Fn() -> u64 + Clone, S: FnMut(u64)>(
    stack: &mut Stack<'_, D, N, S>,
    tcp: SocketHandle,
    config: &ClientConfig,
    plan: &Plan,
    log: &mut dyn FnMut(fmt::Arguments<'_>),
) -> Result<Outcome, FlowError> {
    let lease = dhcp(stack, plan.dhcp_timeout_ms)?;
    log(format_args!(
        "dhcp: address {} gateway {} dns {:?}",
        lease.address,
        lease
            .router
            .map_or_else(|| String::from("none"), |r| format!("{r}")),
        lease.dns_servers
    ));

    let (addresses, resolved) = match plan.host.parse::<Ipv4Address>() {
        Ok(ip) => (vec![ip], Resolved::Literal),
        Err(_) => {
            let server = plan
                .dns_server
                .or_else(|| lease.dns_servers.first().copied());
            let r = match server {
                Some(server) => resolve(stack, &plan.host, server, plan.dns_timeout_ms),
                None => Err(FlowError::DnsFailed {
                    host: plan.host.clone(),
                    reason: String::from(
                        "DHCP gave no DNS server and none was configured (--dns-server)",
                    ),
                }),
            };
            match r {
                Ok(addrs) => {
                    log(format_args!("dns: {} -> {:?}", plan.host, addrs));
                    (addrs, Resolved::Dns)
                }
                Err(e) if !plan.fallback.is_empty() => {
                    log(format_args!(
                        "dns: {e}; using the fallback addresses {:?}",
                        plan.fallback
                    ));
                    (plan.fallback.clone(), Resolved::Fallback(e))
                }
                Err(e) => return Err(e),
            }
        }
    };

    // TCP, to each address in turn.
    let mut last = String::new();
    let mut server = None;
    for (i, &ip) in addresses.iter().enumerate() {
        let port = plan
            .local_port
            .wrapping_add(u16::try_from(i).unwrap_or(0))
            .max(49152);
        match TcpTransport::connect(stack, tcp, (ip, plan.port), port, plan.connect_timeout_ms) {
            Ok(t) => {
                // Connected: keep the connection, take it up again below.
                t.release();
                server = Some(ip);
                break;
            }
            Err(e) => {
                log(format_args!("tcp: {e}"));
                last = match e {
                    TlsError::Transport(t) => format!("{t}"),
                    other => format!("{other}"),
                };
            }
        }
    }
    let Some(server) = server else {
        return Err(FlowError::TcpConnect { reason: last });
    };
    let transport = TcpTransport::new(stack, tcp);
    log(format_args!("tcp: connected to {server}:{}", plan.port));

    // TLS.
    let clock = transport.clock();
    let mut tls =
        TlsSocket::connect(transport, config, &plan.host, clock).map_err(FlowError::from_tls)?;
    let version = tls.session().version();
    log(format_args!(
        "tls: {} {:?}, server verified",
        version.map_or_else(|| String::from("?"), |v| format!("{v}")),
        tls.session().cipher_suite()
    ));
    tls.set_io_timeout(Some(Duration::from_millis(plan.io_timeout_ms)));

    // HTTP.
    let io = |e: TlsError| FlowError::Http(format!("{e}"));
    tls.write_all(&http::request(&plan.host, &plan.path))
        .map_err(io)?;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let mut eof = false;
    let response = loop {
        match http::parse(&received, eof, plan.max_response) {
            Ok(Progress::Done(r)) => break r,
            Ok(Progress::More) if eof => {
                return Err(FlowError::Http(String::from("the server closed early")));
            }
            Ok(Progress::More) => {}
            Err(
                e @ (HttpError::Malformed(_) | HttpError::TooLarge(_) | HttpError::Incomplete(_)),
            ) => {
                return Err(FlowError::Http(format!("{e}")));
            }
        }
        let n = tls.read(&mut buf).map_err(io)?;
        if n == 0 {
            eof = true;
        } else {
            received.extend_from_slice(&buf[..n]);
        }
    };
    // close_notify, then TCP FIN (lingering until acknowledged).
    tls.close().map_err(io)?;
    log(format_args!(
        "tls: closed with close_notify ({})",
        if eof {
            "after the server's"
        } else {
            "the server's not awaited"
        }
    ));
    drop(tls);

    Ok(Outcome {
        lease,
        server,
        resolved,
        version,
        response,
    })
}
