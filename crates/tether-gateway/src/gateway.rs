//! [`Gateway`]: binds the listeners, accepts, spawns a task per connection, drains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tether::{ClientAuth, Identity, ServerConfig, TicketKey, Ticketer, TlsVersion};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{
    AllowList, ClientAuthPolicy, DtlsListen, GatewayConfig, TicketSource, load_ticket_keys,
};
use crate::metrics::Metrics;
use crate::registry::{DeviceInfo, Limits, Registry};
use crate::{GatewayError, conn, dtls, http};

/// A server certificate with less left than this is warned about at start and at renewal.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Listen backlog: room for a burst of devices reconnecting at once (the kernel caps it at
/// `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// State shared by the accept loop, the connections and the HTTP API.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The TLS policy new connections use; replaced when the identity files change.
    pub server_config: RwLock<ServerConfig>,
    /// The DTLS policy (when the DTLS listener runs), replaced with the TLS one.
    pub dtls_config: RwLock<Option<tether::dtls::ServerConfig>>,
    /// Counts identity changes: the DTLS listener takes the new config when it moves.
    pub identity_generation: AtomicU64,
    pub client_auth: ClientAuthPolicy,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_frame: u32,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub limits: Arc<Limits>,
    pub shutdown: watch::Sender<bool>,
    /// Moves when a reload of the watched files is asked for ([`ReloadHandle`]).
    pub reload: watch::Sender<u64>,
    pub started: std::time::Instant,
    /// The allow-list in force (mTLS with an allow-list), replaced when its file changes.
    pub allow: RwLock<Option<Arc<AllowList>>>,
}

impl Shared {
    /// The TLS policy for a new connection.
    pub(crate) fn server_config(&self) -> ServerConfig {
        self.server_config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn is_draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether the allow-list in force lets device `id` in (always, without a list).
    pub(crate) fn allowed(&self, id: &str) -> bool {
        self.allow
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(|list| list.contains(id))
    }
}

/// Starts a drain of the gateway it came from; clone it freely (e.g. into a signal handler).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Stops accepting, lets every connection answer the frames it has received, sends
    /// close_notify, and ends [`Gateway::run`] within the drain timeout. Idempotent.
    pub fn shutdown(&self) {
        self.shared.metrics.set_draining();
        self.shared.shutdown.send_replace(true);
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }
}

/// Makes a running gateway read its files again at once (a `SIGHUP` handler's job); clone it
/// freely.
///
/// The files it reads are the ones it reads periodically anyway: the server certificate, key
/// and device CA (with [`GatewayConfig::identity_files`]), the allow-list
/// ([`GatewayConfig::allow_file`]) and the ticket key file ([`TicketSource::File`]). A periodic
/// read installs a change once two reads in a row find it (a file caught half-written is
/// never installed); a reload asked for installs what it reads at once, since whoever asks has
/// finished writing. A file that cannot be read or parsed, or a certificate whose key does
/// not match, keeps what is in force and logs a warning, as at a periodic read.
#[derive(Clone, Debug)]
pub struct ReloadHandle {
    shared: Arc<Shared>,
}

impl ReloadHandle {
    /// Asks every file watcher to read its file now.
    pub fn reload(&self) {
        self.shared.reload.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A bound gateway: [`bind`](Gateway::bind) it, read its addresses back, then
/// [`run`](Gateway::run) it until a [`ShutdownHandle`] drains it.
///
/// ```no_run
/// # async fn example(config: tether_gateway::GatewayConfig) -> Result<(), tether_gateway::GatewayError> {
/// let gateway = tether_gateway::Gateway::bind(config).await?;
/// println!("listening on {}", gateway.local_addr());
/// let stop = gateway.shutdown_handle();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     stop.shutdown();
/// });
/// gateway.run().await
/// # }
/// ```
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    dtls: Option<dtls::Listener>,
    dtls_addr: Option<SocketAddr>,
    http: Option<TcpListener>,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    ticketer: Arc<Ticketer>,
    tickets: TicketSource,
    /// The keys read from the ticket key file at bind (the reload compares against them).
    loaded: Option<Keys>,
    /// The allow-list file and how often to read it.
    allow_reload: Option<(PathBuf, Duration)>,
    /// What a new server identity is built into.
    policy: Policy,
    /// The certificate, key (and device CA) files, and how often to read them.
    identity_reload: Option<(PolicyFiles, Duration)>,
}

/// Ticket keys from a file: current, previous.
type Keys = (TicketKey, Option<TicketKey>);

/// The gateway's TLS policy without its identity: what a renewed certificate is built into,
/// for TLS and for DTLS.
#[derive(Clone, Debug)]
struct Policy {
    min_tls: TlsVersion,
    handshake_timeout: Duration,
    auth: ClientAuth,
    ticketer: Arc<Ticketer>,
    verified_client_chains: usize,
    crypto: tether::Crypto,
}

impl Policy {
    /// The TLS config; fails when the key does not match the certificate.
    fn tls(&self, identity: Identity) -> Result<ServerConfig, tether::Error> {
        ServerConfig::builder(identity)
            .versions(self.min_tls, TlsVersion::Tls13)
            .handshake_timeout(self.handshake_timeout)
            .client_auth(self.auth.clone())
            .ticketer(self.ticketer.clone())
            .verified_client_chains(self.verified_client_chains)
            .crypto(self.crypto)
            .build()
    }

    /// The DTLS config (DTLS 1.2 minimum unless TLS 1.3 is).
    fn dtls(&self, identity: Identity) -> Result<tether::dtls::ServerConfig, tether::Error> {
        let min = match self.min_tls {
            TlsVersion::Tls13 => tether::dtls::DtlsVersion::Dtls13,
            _ => tether::dtls::DtlsVersion::Dtls12,
        };
        tether::dtls::ServerConfig::builder(identity)
            .versions(min, tether::dtls::DtlsVersion::Dtls13)
            .handshake_timeout(self.handshake_timeout)
            .client_auth(self.auth.clone())
            .build()
    }
}

fn make_ticketer(source: &TicketSource) -> Result<(Arc<Ticketer>, Option<Keys>), GatewayError> {
    Ok(match source {
        TicketSource::Generated { .. } => (
            Arc::new(Ticketer::generate().map_err(GatewayError::Tls)?),
            None,
        ),
        TicketSource::File { path, .. } => {
            let (current, previous) = load_ticket_keys(path)?;
            let t = Ticketer::with_key(previous.clone().unwrap_or_else(|| current.clone()));
            if previous.is_some() {
                t.rotate(current.clone());
            }
            (Arc::new(t), Some((current, previous)))
        }
    })
}

/// How many TCP ports the kernel may pick before one is also free on UDP (DTLS on the same port).
const PORT_PICKS: usize = 32;

async fn listen(
    addr: SocketAddr,
    what: &str,
    reuse_port: bool,
) -> Result<TcpListener, GatewayError> {
    let err = |e| GatewayError::io(format!("cannot listen on {addr} ({what})"), e);
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    // Lets a restarted gateway bind while old connections sit in TIME_WAIT; a port another
    // process listens on is still refused.
    socket.set_reuseaddr(true).map_err(err)?;
    if reuse_port {
        // The other gateways of the group listen on this port too (`reuse_port`).
        socket.set_reuseport(true).map_err(err)?;
    }
    // TLS writes whole flights and records: no Nagle delay behind the peer's delayed ACK.
    // Accepted sockets inherit it (Linux), which saves a system call per connection.
    socket.set_nodelay(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)
}

impl Gateway {
    /// Checks the configuration, builds the TLS policy and binds both listeners. Call it inside
    /// a tokio runtime.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        if config.max_connections == 0 || config.max_per_ip == 0 {
            return Err(GatewayError::Config(
                "max_connections and max_per_ip must be at least 1".into(),
            ));
        }
        if config.reuse_port && config.dtls == DtlsListen::SameAsTls {
            return Err(GatewayError::Config(
                "reuse_port shares the TLS port between gateway processes, not a DTLS one: the \
                 kernel would send a DTLS device's datagrams to another process whenever one \
                 of the group starts or stops. Set the DTLS listener off, or give each process \
                 a DTLS address of its own"
                    .into(),
            ));
        }
        if config.reuse_port && !matches!(config.tickets, TicketSource::File { .. }) {
            tracing::warn!(
                "reuse_port without a ticket key file: a device that reaches another process \
                 of the group makes a full handshake; give every process the same ticket keys \
                 to resume anywhere"
            );
        }
        let (ticketer, loaded) = make_ticketer(&config.tickets)?;
        let auth = match &config.client_auth {
            ClientAuthPolicy::Required { trust, .. } => ClientAuth::Required(trust.clone()),
            ClientAuthPolicy::ServerOnly => ClientAuth::None,
        };
        let policy = Policy {
            min_tls: config.min_tls,
            handshake_timeout: config.handshake_timeout,
            auth,
            ticketer: ticketer.clone(),
            verified_client_chains: config.verified_client_chains,
            crypto: config.crypto,
        };
        let server_config = policy
            .tls(config.identity.clone())
            .map_err(GatewayError::Tls)?;

        // The DTLS listener takes the TLS listener's port number on UDP. When the kernel picks
        // the TCP port (port 0), that number may be taken on UDP by another socket: pick again
        // rather than fail (an explicit port that is taken is the user's error to see).
        let kernel_picks =
            config.listen.port() == 0 && matches!(config.dtls, DtlsListen::SameAsTls);
        // Ports found taken on UDP stay held until a free pair is found, so that the kernel
        // does not pick them again.
        let mut held = Vec::new();
        let (listener, local_addr, dtls) = loop {
            let listener = listen(config.listen, "TLS", config.reuse_port).await?;
            let local_addr = listener.local_addr().map_err(|e| {
                GatewayError::io("cannot read the TLS listener's address".into(), e)
            })?;
            match bind_dtls(&config, &policy, local_addr).await {
                Err(GatewayError::Io { source, .. })
                    if kernel_picks
                        && source.kind() == std::io::ErrorKind::AddrInUse
                        && held.len() < PORT_PICKS =>
                {
                    held.push(listener);
                }
                dtls => break (listener, local_addr, dtls?),
            }
        };
        drop(held);
        let dtls_addr = match &dtls {
            Some(l) => Some(l.socket.local_addr().map_err(|e| {
                GatewayError::io("cannot read the DTLS listener's address".into(), e)
            })?),
            None => None,
        };
        let (http, http_addr) = match config.http {
            Some(addr) => {
                let l = listen(addr, "HTTP API", false).await?;
                let a = l.local_addr().map_err(|e| {
                    GatewayError::io("cannot read the HTTP listener's address".into(), e)
                })?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let allow = match &config.client_auth {
            ClientAuthPolicy::Required {
                allow: Some(list), ..
            } => Some(Arc::new(list.clone())),
            _ => None,
        };
        let allow_reload = match (&allow, &config.allow_file) {
            (Some(_), Some(path)) => Some((path.clone(), config.allow_reload_every)),
            _ => None,
        };
        let ca = match &config.client_auth {
            ClientAuthPolicy::Required { .. } => config.ca_file.clone(),
            ClientAuthPolicy::ServerOnly => None,
        };
        let identity_reload = config
            .identity_files
            .clone()
            .map(|(cert, key)| (PolicyFiles { cert, key, ca }, config.identity_reload_every));
        let metrics = Arc::new(Metrics::default());
        if let Some(list) = &allow {
            metrics.allow_list(list.len(), false);
        }
        note_expiry(&metrics, config.identity.leaf());
        let shared = Arc::new(Shared {
            server_config: RwLock::new(server_config),
            dtls_config: RwLock::new(dtls.as_ref().map(|l| l.config.clone())),
            identity_generation: AtomicU64::new(0),
            client_auth: config.client_auth,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            drain_timeout: config.drain_timeout,
            max_frame: config.max_frame,
            limits: Arc::new(Limits::new(config.max_connections, config.max_per_ip)),
            metrics,
            registry: Arc::new(Registry::default()),
            shutdown: watch::Sender::new(false),
            reload: watch::Sender::new(0),
            started: std::time::Instant::now(),
            allow: RwLock::new(allow),
        });
        Ok(Gateway {
            listener,
            dtls,
            dtls_addr,
            http,
            local_addr,
            http_addr,
            shared,
            ticketer,
            tickets: config.tickets,
            loaded,
            allow_reload,
            policy,
            identity_reload,
        })
    }

    /// The TLS listener's address (with the real port when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The DTLS listener's address (UDP), if it has one.
    pub fn dtls_addr(&self) -> Option<SocketAddr> {
        self.dtls_addr
    }

    /// The HTTP API's address, if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// A handle that starts the drain.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// A handle that makes the gateway read its files again at once.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            shared: self.shared.clone(),
        }
    }

    /// The gateway's counters (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// A view of the connected devices that stays valid while the gateway runs.
    pub fn devices(&self) -> Devices {
        Devices {
            registry: self.shared.registry.clone(),
        }
    }

    /// Accepts connections and serves them until a drain completes: stops accepting, lets the
    /// connections finish (they answer frames already received and send close_notify), cuts
    /// what is still open at the drain timeout, then stops the HTTP API.
    pub async fn run(self) -> Result<(), GatewayError> {
        let Gateway {
            listener,
            dtls,
            http,
            shared,
            ticketer,
            tickets,
            loaded,
            allow_reload,
            policy,
            identity_reload,
            ..
        } = self;
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let http_task = http.map(|l| tokio::spawn(http::serve(l, shared.clone(), http_stopped)));
        let ticket_task = tokio::spawn(rotate_tickets(
            ticketer,
            tickets,
            loaded,
            shared.reload.subscribe(),
        ));
        let allow_task = allow_reload
            .map(|(path, every)| tokio::spawn(reload_allow_list(shared.clone(), path, every)));
        let identity_task = identity_reload.map(|(files, every)| {
            tokio::spawn(reload_identity(shared.clone(), policy, files, every))
        });

        let dtls_task =
            dtls.map(|l| tokio::spawn(dtls::serve(l, shared.clone(), shared.shutdown.subscribe())));
        let mut stop = shared.shutdown.subscribe();
        let mut conns = JoinSet::new();
        let mut next_id = 0u64;
        if !*stop.borrow_and_update() {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, remote)) => match shared.limits.acquire(remote.ip(), &shared.metrics) {
                            Ok(slot) => {
                                next_id += 1;
                                conns.spawn(conn::serve(
                                    shared.clone(),
                                    tcp,
                                    remote,
                                    slot,
                                    next_id,
                                ));
                            }
                            Err(why) => {
                                shared.metrics.rejected(why);
                                tracing::debug!(%remote, reason = why.name(), "connection refused");
                                drop(tcp);
                            }
                        },
                        Err(e) => {
                            // Out of descriptors or memory: back off instead of spinning.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        }
        drop(listener);
        shared.metrics.set_draining();
        // Every listed session learns of the drain; one listed after this sees it when its
        // frame loop starts (`conn::frame_loop`).
        shared.registry.wake_all();
        let open = conns.len();
        tracing::info!(open, "draining");
        let deadline = tokio::time::Instant::now() + shared.drain_timeout;
        let _ = tokio::time::timeout_at(deadline, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if !conns.is_empty() {
            tracing::warn!(
                cut = conns.len(),
                "drain timeout: cutting connections still open"
            );
        }
        conns.shutdown().await;
        if let Some(mut task) = dtls_task {
            // The DTLS listener serves what it holds, sends close_notify and returns.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left.max(Duration::from_millis(500)), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        ticket_task.abort();
        for task in [allow_task, identity_task].into_iter().flatten() {
            task.abort();
        }
        let _ = http_stop.send(());
        if let Some(mut task) = http_task {
            // Requests in progress get a moment; then the API stops with the gateway.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        Ok(())
    }
}

/// Binds the DTLS listener the configuration asks for (`None`: off, or not possible with
/// this identity on the default address).
async fn bind_dtls(
    config: &GatewayConfig,
    policy: &Policy,
    tls_addr: SocketAddr,
) -> Result<Option<dtls::Listener>, GatewayError> {
    let addr = match config.dtls {
        DtlsListen::Off => return Ok(None),
        DtlsListen::SameAsTls => tls_addr,
        DtlsListen::At(a) => a,
    };
    let explicit = matches!(config.dtls, DtlsListen::At(_));
    let dtls_config = match policy.dtls(config.identity.clone()) {
        Ok(c) => c,
        Err(e) if !explicit => {
            tracing::warn!(
                "no DTLS listener: the server identity cannot serve DTLS ({e}); \
                 give the gateway an ECDSA certificate, or set the DTLS listener off"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(GatewayError::Config(format!(
                "the DTLS listener on {addr} cannot use the server identity: {e}"
            )));
        }
    };
    let socket = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| GatewayError::io(format!("cannot listen on {addr} (DTLS, UDP)"), e))?;
    let udp = quinn_udp::UdpSocketState::new((&socket).into())
        .map_err(|e| GatewayError::io(format!("cannot set up the DTLS socket on {addr}"), e))?;
    // One socket takes every device's datagrams: a burst of them (devices reconnecting, a
    // fleet reporting at once) must wait in the kernel rather than be dropped there.
    for (what, r) in [
        (
            "receive",
            udp.set_recv_buffer_size((&socket).into(), dtls::SOCKET_BUFFER),
        ),
        (
            "send",
            udp.set_send_buffer_size((&socket).into(), dtls::SOCKET_BUFFER),
        ),
    ] {
        if let Err(e) = r {
            tracing::warn!("DTLS listener: cannot set the {what} buffer size: {e}");
        }
    }
    Ok(Some(dtls::Listener {
        socket,
        udp,
        config: dtls_config,
        max_handshaking: config.dtls_max_handshaking.max(1),
        max_sessions: config.max_connections,
    }))
}

/// Installs new ticket keys: a generated key per period, or the key file's keys when it changes.
async fn rotate_tickets(
    ticketer: Arc<Ticketer>,
    source: TicketSource,
    loaded: Option<Keys>,
    mut reload: watch::Receiver<u64>,
) {
    match source {
        TicketSource::Generated { rotate_every } => loop {
            tokio::time::sleep(rotate_every).await;
            match TicketKey::generate() {
                Ok(key) => ticketer.rotate(key),
                Err(e) => tracing::warn!("cannot generate a ticket key: {e}"),
            }
        },
        TicketSource::File { path, reload_every } => {
            // Like the allow-list: a change goes in force when two reads in a row find it (the
            // first 48 bytes of a file being rewritten are a valid key file of their own).
            let mut installed = loaded;
            let mut pending = None;
            loop {
                let asked = next_read(reload_every, &mut reload).await;
                match load_ticket_keys(&path) {
                    Ok(keys) => {
                        let Some(keys) = settled(&mut pending, installed.as_ref(), keys, asked)
                        else {
                            continue;
                        };
                        let (current, previous) = keys.clone();
                        if let Some(previous) = previous {
                            ticketer.rotate(previous);
                        }
                        ticketer.rotate(current);
                        installed = Some(keys);
                        tracing::info!(path = %path.display(), "installed new ticket keys");
                    }
                    Err(e) => {
                        pending = None;
                        tracing::warn!("keeping the current ticket keys: {e}");
                    }
                }
            }
        }
    }
}

/// The files the TLS policy is read from again: the server's certificate chain and key, and
/// with mTLS the device CA.
#[derive(Debug)]
struct PolicyFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
}

/// What [`PolicyFiles`] held at one read: certificate, key, device CA.
type PolicyBytes = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

impl PolicyFiles {
    fn read(&self) -> Result<PolicyBytes, String> {
        let one = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
        };
        let ca = match &self.ca {
            Some(path) => Some(one(path, "device CA")?),
            None => None,
        };
        Ok((
            one(&self.cert, "certificate")?,
            one(&self.key, "private key")?,
            ca,
        ))
    }
}

/// Reads the certificate, key and device CA files every `every`; a change goes in force once
/// two reads in a row find it (a certificate renewed before its key is never installed with the
/// old key) and only if it makes a working policy (the key matches the certificate, the CA
/// file holds certificates, DTLS can use it when the DTLS listener runs). New handshakes use it;
/// open sessions keep theirs.
async fn reload_identity(
    shared: Arc<Shared>,
    mut policy: Policy,
    files: PolicyFiles,
    every: Duration,
) {
    let mut current = files.read().ok();
    let mut pending = None;
    let mut reload = shared.reload.subscribe();
    loop {
        let asked = next_read(every, &mut reload).await;
        let read = match files.read() {
            Ok(read) => read,
            Err(e) => {
                pending = None;
                shared.metrics.identity_reload(false);
                tracing::warn!("keeping the server certificate and device CA in force: {e}");
                continue;
            }
        };
        let Some(read) = settled(&mut pending, current.as_ref(), read, asked) else {
            if asked {
                tracing::info!("reload: the server certificate, key and device CA are unchanged");
            }
            continue;
        };
        match install_identity(&shared, &mut policy, &read) {
            Ok(()) => {
                current = Some(read);
                shared.metrics.identity_reload(true);
                tracing::info!(
                    cert = %files.cert.display(),
                    "installed a changed server certificate or device CA for new handshakes"
                );
            }
            Err(e) => {
                shared.metrics.identity_reload(false);
                tracing::warn!(
                    "keeping the server certificate and device CA in force: {} and {}{}: {e}",
                    files.cert.display(),
                    files.key.display(),
                    files
                        .ca
                        .as_ref()
                        .map(|p| format!(" with {}", p.display()))
                        .unwrap_or_default()
                );
            }
        }
    }
}

/// Builds the TLS (and DTLS) policy of a certificate, key and device CA (PEM) and puts it in
/// force; `policy` takes the new CA.
fn install_identity(
    shared: &Shared,
    policy: &mut Policy,
    (cert, key, ca): &PolicyBytes,
) -> Result<(), tether::Error> {
    let identity = Identity::from_pem(cert, key)?;
    let mut next = policy.clone();
    if let Some(ca) = ca {
        next.auth = ClientAuth::Required(tether::Trust::from_pem(ca)?);
    }
    let tls = next.tls(identity.clone())?;
    let leaf = identity.leaf().clone();
    let mut dtls_slot = shared
        .dtls_config
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let dtls = match &*dtls_slot {
        Some(_) => Some(next.dtls(identity)?),
        None => None,
    };
    *shared
        .server_config
        .write()
        .unwrap_or_else(PoisonError::into_inner) = tls;
    *dtls_slot = dtls;
    shared.identity_generation.fetch_add(1, Ordering::Release);
    *policy = next;
    note_expiry(&shared.metrics, &leaf);
    Ok(())
}

/// Puts the expiry of the server certificate `leaf` in the metrics; warns when it is near.
fn note_expiry(metrics: &Metrics, leaf: &tether::CertificateDer<'_>) {
    let Ok(info) = tether_pki::describe(leaf) else {
        return;
    };
    let expiry = info.not_after.unix_timestamp();
    metrics.certificate_expiry(u64::try_from(expiry).unwrap_or(0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = expiry.saturating_sub(i64::try_from(now).unwrap_or(i64::MAX));
    if left < EXPIRY_WARNING.as_secs() as i64 {
        tracing::warn!(
            "the server certificate expires {} ({} days from now): renew it; tether serve reads \
             the files again and needs no restart",
            tether_pki::rfc3339(info.not_after),
            left / 86_400
        );
    }
}

/// Reads the allow-list file every `every`; a changed list goes in force once two reads in a
/// row find it (a file caught half-written, even empty, is never installed: that would cut
/// off every device it had not reached yet), and the sessions of devices it no longer lists
/// are told to close.
async fn reload_allow_list(shared: Arc<Shared>, path: PathBuf, every: Duration) {
    let mut pending: Option<AllowList> = None;
    let mut reload = shared.reload.subscribe();
    loop {
        let asked = next_read(every, &mut reload).await;
        let list = match AllowList::load(&path) {
            Ok(list) => list,
            Err(e) => {
                pending = None;
                shared.metrics.allow_list_failed();
                tracing::warn!("keeping the allow-list in force: {e}");
                continue;
            }
        };
        {
            let mut current = shared.allow.write().unwrap_or_else(PoisonError::into_inner);
            let Some(list) = settled(&mut pending, current.as_deref(), list, asked) else {
                if asked {
                    tracing::info!(path = %path.display(), "reload: the allow-list is unchanged");
                }
                continue;
            };
            shared.metrics.allow_list(list.len(), true);
            *current = Some(Arc::new(list));
        }
        let closing = shared.registry.revoke(|id| shared.allowed(id));
        tracing::info!(
            path = %path.display(),
            closing,
            "installed a new allow-list; closing the sessions of devices it no longer lists"
        );
    }
}

/// Waits until a watched file is due to be read: `every` has passed (false), or a reload was
/// asked for ([`ReloadHandle`], true).
async fn next_read(every: Duration, reload: &mut watch::Receiver<u64>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(every) => false,
        changed = reload.changed() => match changed {
            Ok(()) => true,
            // The gateway is gone (it holds the sender): periodic reads only.
            Err(_) => {
                tokio::time::sleep(every).await;
                false
            }
        },
    }
}

/// What a read of a watched file means: `Some(value)` to install (a change that the previous
/// read found too, or any change when the read was `asked` for), `None` to wait (unchanged, or
/// a change seen once, now `pending`).
fn settled<T: PartialEq>(
    pending: &mut Option<T>,
    current: Option<&T>,
    read: T,
    asked: bool,
) -> Option<T> {
    if current == Some(&read) {
        *pending = None;
        return None;
    }
    if asked || pending.as_ref() == Some(&read) {
        *pending = None;
        return Some(read);
    }
    *pending = Some(read);
    None
}

/// The connected devices of a running gateway.
#[derive(Clone, Debug)]
pub struct Devices {
    registry: Arc<Registry>,
}

impl Devices {
    /// The established device sessions, oldest first.
    pub fn list(&self) -> Vec<DeviceInfo> {
        self.registry.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change is installed on its second sighting in a row; a half-written file seen once
    /// (here: empty, then the whole list) is never installed.
    #[test]
    fn a_watched_file_changes_only_when_two_reads_agree() {
        let mut pending = None;
        let current = Some(&"a b");
        assert_eq!(settled(&mut pending, current, "a b", false), None);
        assert_eq!(settled(&mut pending, current, "", false), None, "seen once");
        assert_eq!(
            settled(&mut pending, current, "a", false),
            None,
            "another change, seen once"
        );
        assert_eq!(settled(&mut pending, current, "a", false), Some("a"));
        assert_eq!(pending, None);
        // Back to what is in force: nothing pending any more.
        assert_eq!(settled(&mut pending, current, "b", false), None);
        assert_eq!(settled(&mut pending, current, "a b", false), None);
        assert_eq!(
            settled(&mut pending, current, "b", false),
            None,
            "the earlier sighting is gone"
        );
        assert_eq!(settled(&mut pending, current, "b", false), Some("b"));
    }

    /// A read asked for (a SIGHUP) installs any change at once; an unchanged file is not a
    /// change, and a pending sighting does not outlive it.
    #[test]
    fn a_read_asked_for_installs_a_change_at_once() {
        let mut pending = None;
        let current = Some(&"a b");
        assert_eq!(settled(&mut pending, current, "a b", true), None);
        assert_eq!(settled(&mut pending, current, "a", false), None);
        assert_eq!(settled(&mut pending, current, "b", true), Some("b"));
        assert_eq!(pending, None);
    }

    /// Connections the TLS listener accepts have TCP_NODELAY without a call of their own.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let l = listen("127.0.0.1:0".parse().unwrap(), "test", false)
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
