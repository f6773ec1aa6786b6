//! The typed API client the CLI and the agents use: HTTPS (rustls) to the
//! masters, trying each in turn, one kept-alive HTTP/1.1 connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;

use control::model::ApiErrorBody;

mod transfer;
pub use transfer::TransferError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time for one request on an open connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No master could be reached or none completed the request.
    #[error("no master answered: {failures}")]
    Unreachable {
        /// What went wrong with each master, `endpoint: reason; ...`.
        failures: String,
        /// Whether a master refused this node's own certificate (expired,
        /// or not of this cluster's CA): only joining again can help.
        identity_refused: bool,
    },
    /// A master answered with an error.
    #[error("{endpoint} refused the request ({status}): {message}")]
    Api {
        endpoint: String,
        status: u16,
        message: String,
        /// The error body's code (`control::api::code`); absent from
        /// masters that predate codes.
        code: Option<String>,
    },
    #[error("{endpoint} sent an answer that is not the expected JSON: {reason}")]
    Decode { endpoint: String, reason: String },
}

impl ClientError {
    /// The HTTP status, when a master answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error body's code, when a master answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The TLS config carries the node's client certificate, or the call
    /// carries its own proof (joining).
    Tls,
    /// The CLI's bearer token.
    Bearer(String),
}

struct Conn {
    index: usize,
    sender: SendRequest<Full<Bytes>>,
    local: Option<SocketAddr>,
    /// The [`Credentials`] generation it was opened with.
    generation: u64,
}

/// The TLS configuration (with a node's certificate) that clients share
/// and that a renewal replaces: every clone sees the new one, and a client
/// drops a connection opened with an older one before its next request, so
/// nothing keeps presenting a certificate that will expire.
#[derive(Clone)]
pub struct Credentials(Arc<std::sync::RwLock<(u64, Arc<ClientConfig>)>>);

impl Credentials {
    pub fn new(tls: ClientConfig) -> Credentials {
        Credentials(Arc::new(std::sync::RwLock::new((0, Arc::new(tls)))))
    }

    /// Replaces the configuration for every client that holds these.
    pub fn set(&self, tls: ClientConfig) {
        let mut slot = self.0.write().unwrap_or_else(|p| p.into_inner());
        *slot = (slot.0 + 1, Arc::new(tls));
    }

    /// The current configuration and its generation.
    fn current(&self) -> (u64, Arc<ClientConfig>) {
        let slot = self.0.read().unwrap_or_else(|p| p.into_inner());
        (slot.0, slot.1.clone())
    }
}

/// A client of the Strata API.
pub struct ApiClient {
    endpoints: Vec<String>,
    tls: Credentials,
    auth: Auth,
    conn: tokio::sync::Mutex<Option<Conn>>,
    last_local: std::sync::Mutex<Option<SocketAddr>>,
    timeout: Duration,
    /// The local address to connect from (the kernel's choice by default).
    local_ip: Option<std::net::IpAddr>,
}

impl ApiClient {
    /// `endpoints` are `host:port` of the masters.
    pub fn new(endpoints: Vec<String>, tls: ClientConfig, auth: Auth) -> ApiClient {
        ApiClient::with_credentials(endpoints, Credentials::new(tls), auth)
    }

    /// A client whose TLS configuration follows `tls` (a node's renewed
    /// certificate).
    pub fn with_credentials(endpoints: Vec<String>, tls: Credentials, auth: Auth) -> ApiClient {
        ApiClient {
            endpoints,
            tls,
            auth,
            conn: tokio::sync::Mutex::new(None),
            last_local: std::sync::Mutex::new(None),
            timeout: REQUEST_TIMEOUT,
            local_ip: None,
        }
    }

    /// Connects from `ip`: the cluster bench spreads many simulated agents
    /// over loopback addresses, since one source address has only about
    /// 28,000 ports towards one master.
    pub fn with_local_ip(mut self, ip: std::net::IpAddr) -> ApiClient {
        self.local_ip = Some(ip);
        self
    }

    /// Gives up on one master after `timeout` and tries the next. Agents
    /// use a timeout well inside the heartbeat grace period, so a master
    /// that vanished without closing its connections does not cost them
    /// their Ready state.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = timeout;
        self
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// This side's address of the last connection to a master: the address
    /// the masters see.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.last_local.lock().expect("local address lock poisoned")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("request bodies always serialize");
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("request bodies always serialize");
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (endpoint, status, bytes) = self.request(method, path, body).await?;
        if !status.is_success() {
            return Err(refusal(endpoint, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            endpoint,
            reason: e.to_string(),
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(String, StatusCode, Bytes), ClientError> {
        let mut guard = self.conn.lock().await;
        let mut failures = Vec::new();
        let mut identity_refused = false;
        let mut failed = |endpoint: &str, f: Failure| {
            identity_refused |= f.tls.is_some_and(TlsFailure::node_identity_refused);
            failures.push(format!("{endpoint}: {}", f.message));
        };
        let start = guard.as_ref().map_or(0, |c| c.index);
        // A connection opened with credentials since replaced goes.
        let generation = self.tls.current().0;
        if guard.as_ref().is_some_and(|c| c.generation != generation) {
            *guard = None;
        }
        if let Some(conn) = guard.as_mut() {
            let endpoint = self.endpoints[conn.index].clone();
            match self
                .send(conn, &endpoint, &method, path, body.clone())
                .await
            {
                Ok((status, bytes)) => return Ok((endpoint, status, bytes)),
                Err(e) => failed(&endpoint, e),
            }
            *guard = None;
        }
        let n = self.endpoints.len();
        for k in 0..n {
            let index = (start + k) % n;
            let endpoint = self.endpoints[index].clone();
            let mut conn = match self.connect(index).await {
                Ok(c) => c,
                Err(e) => {
                    failed(&endpoint, e);
                    continue;
                }
            };
            *self.last_local.lock().expect("local address lock poisoned") = conn.local;
            match self
                .send(&mut conn, &endpoint, &method, path, body.clone())
                .await
            {
                Ok((status, bytes)) => {
                    *guard = Some(conn);
                    return Ok((endpoint, status, bytes));
                }
                Err(e) => failed(&endpoint, e),
            }
        }
        Err(ClientError::Unreachable {
            failures: failures.join("; "),
            identity_refused,
        })
    }

    async fn connect(&self, index: usize) -> Result<Conn, Failure> {
        let (sender, local, generation) = self.open(index).await?;
        Ok(Conn {
            index,
            sender,
            local,
            generation,
        })
    }

    /// A new connection to master `index` whose requests carry bodies of
    /// type `B`: its sender, the local address and the credentials'
    /// generation it was opened with.
    async fn open<B>(
        &self,
        index: usize,
    ) -> Result<(SendRequest<B>, Option<SocketAddr>, u64), Failure>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let endpoint = &self.endpoints[index];
        let host = endpoint
            .rsplit_once(':')
            .map_or(endpoint.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("bad host name `{host}`: {e}"))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let Some(ip) = self.local_ip else {
                return tokio::net::TcpStream::connect(endpoint.as_str()).await;
            };
            let peer = tokio::net::lookup_host(endpoint.as_str())
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("the name has no address"))?;
            let socket = if peer.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(peer).await
        })
        .await
        .map_err(|_| format!("no TCP connection within {}s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot connect: {e}"))?;
        let local = tcp.local_addr().ok();
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let (generation, tls) = self.tls.current();
        let connector = tokio_rustls::TlsConnector::from(tls);
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| format!("no TLS handshake within {}s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| Failure::tls(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the master
            // closes it; the next request reconnects. An upgraded one
            // (`ApiClient::upgrade`) goes on as the upgraded stream.
            let _ = connection.with_upgrades().await;
        });
        Ok((sender, local, generation))
    }

    async fn send(
        &self,
        conn: &mut Conn,
        endpoint: &str,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, endpoint);
        if let Auth::Bearer(token) = &self.auth {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("bad request: {e}"))?;
        let exchange = async {
            conn.sender.ready().await.map_err(|e| Failure::tls(&e))?;
            let resp = conn
                .sender
                .send_request(req)
                .await
                .map_err(|e| Failure::tls(&e))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, Failure>((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:.1}s", self.timeout.as_secs_f64()))?
    }
}

/// A connection a master upgraded (`ApiClient::upgrade`).
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

impl ApiClient {
    /// POSTs `body` to `path` asking the master to upgrade the connection
    /// to `protocol`, on a connection of its own (not the one calls
    /// share), trying each master in turn until one switches. A master that
    /// refuses with a code in `next_on` is passed over like one that cannot
    /// be reached; any other refusal is the answer. `wait` bounds each
    /// master's answer.
    pub async fn upgrade<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        protocol: &str,
        next_on: &[&str],
        wait: Duration,
    ) -> Result<Upgraded, ClientError> {
        let body = Bytes::from(serde_json::to_vec(body).expect("request bodies always serialize"));
        let mut failures = Vec::new();
        let mut identity_refused = false;
        for index in 0..self.endpoints.len() {
            let endpoint = self.endpoints[index].clone();
            let mut conn = match self.connect(index).await {
                Ok(c) => c,
                Err(f) => {
                    identity_refused |= f.tls.is_some_and(TlsFailure::node_identity_refused);
                    failures.push(format!("{endpoint}: {}", f.message));
                    continue;
                }
            };
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(hyper::header::HOST, &endpoint)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::CONNECTION, "upgrade")
                .header(hyper::header::UPGRADE, protocol);
            if let Auth::Bearer(token) = &self.auth {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(Full::new(body.clone()))
                .expect("the request's parts are valid");
            let exchange = async {
                conn.sender.ready().await?;
                conn.sender.send_request(req).await
            };
            let resp = match tokio::time::timeout(wait, exchange).await {
                Err(_) => {
                    failures.push(format!(
                        "{endpoint}: no answer within {:.0}s",
                        wait.as_secs_f64()
                    ));
                    continue;
                }
                Ok(Err(e)) => {
                    let f = Failure::tls(&e);
                    identity_refused |= f.tls.is_some_and(TlsFailure::node_identity_refused);
                    failures.push(format!("{endpoint}: {}", f.message));
                    continue;
                }
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                let upgraded =
                    hyper::upgrade::on(resp)
                        .await
                        .map_err(|e| ClientError::Unreachable {
                            failures: format!("{endpoint}: the upgrade failed: {}", chain(&e)),
                            identity_refused: false,
                        })?;
                return Ok(TokioIo::new(upgraded));
            }
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (message, code) = serde_json::from_slice::<ApiErrorBody>(&bytes)
                .map(|b| (b.error, b.code))
                .unwrap_or_else(|_| (String::from_utf8_lossy(&bytes).trim().to_string(), None));
            if code.as_deref().is_some_and(|c| next_on.contains(&c)) {
                failures.push(format!("{endpoint}: {message}"));
                continue;
            }
            return Err(ClientError::Api {
                endpoint,
                status: status.as_u16(),
                message,
                code,
            });
        }
        Err(ClientError::Unreachable {
            failures: failures.join("; "),
            identity_refused,
        })
    }
}

/// A master's refusal, from its status and its error body (or its text,
/// from masters that predate error bodies).
fn refusal(endpoint: String, status: StatusCode, bytes: &[u8]) -> ClientError {
    let (message, code) = serde_json::from_slice::<ApiErrorBody>(bytes)
        .map(|b| (b.error, b.code))
        .unwrap_or_else(|_| (String::from_utf8_lossy(bytes).trim().to_string(), None));
    ClientError::Api {
        endpoint,
        status: status.as_u16(),
        message,
        code,
    }
}

/// Why one master did not answer: the text for the operator, and what a
/// TLS failure means for Strata when it was one.
struct Failure {
    message: String,
    tls: Option<TlsFailure>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, tls: None }
    }
}

impl Failure {
    /// A failure of the TLS session or of the exchange over it: the whole
    /// chain of causes, led by what it means when it is a TLS failure.
    fn tls(e: &(dyn std::error::Error + 'static)) -> Failure {
        let message = chain(e);
        let tls = TlsFailure::of(e);
        Failure {
            message: match tls {
                Some(t) => format!("{} ({message})", t.hint()),
                None => message,
            },
            tls,
        }
    }
}

/// What a TLS failure means for Strata, read from rustls's error (not from
/// its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The master refused this node's certificate as expired.
    NodeCertExpired,
    /// The master does not trust this node's certificate.
    NodeCertUntrusted,
    /// The master's certificate is not signed by the cluster CA.
    MasterUntrusted,
    /// The master's certificate has expired.
    MasterExpired,
}

impl TlsFailure {
    /// The first rustls error in `e`'s chain, classified.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
        let mut next = Some(e);
        while let Some(err) = next {
            let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
                err.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = tls {
                return Self::classify(tls);
            }
            next = err.source();
        }
        None
    }

    fn classify(e: &rustls::Error) -> Option<TlsFailure> {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match e {
            E::AlertReceived(A::CertificateExpired) => Some(TlsFailure::NodeCertExpired),
            E::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError) => {
                Some(TlsFailure::NodeCertUntrusted)
            }
            E::InvalidCertificate(C::UnknownIssuer) => Some(TlsFailure::MasterUntrusted),
            E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                Some(TlsFailure::MasterExpired)
            }
            _ => None,
        }
    }

    /// What it means, for the operator.
    pub fn hint(self) -> &'static str {
        match self {
            TlsFailure::NodeCertExpired => "the master says this node's certificate has expired",
            TlsFailure::NodeCertUntrusted => {
                "the master does not trust this node's certificate (issued by another cluster's CA?)"
            }
            TlsFailure::MasterUntrusted => {
                "the master's certificate is not signed by the cluster CA"
            }
            TlsFailure::MasterExpired => "the master's certificate has expired",
        }
    }

    /// Whether only joining again (a new certificate) can help.
    pub fn node_identity_refused(self) -> bool {
        matches!(
            self,
            TlsFailure::NodeCertExpired | TlsFailure::NodeCertUntrusted
        )
    }
}

/// An error with all its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
