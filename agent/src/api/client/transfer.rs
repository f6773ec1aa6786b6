//! Bodies too large for memory, each on a connection of its own: pushing
//! a file to a master (streamed from the disk), and downloading one into
//! a file, resumed with a `Range` request from what the file already holds
//! (after a dropped connection, a master that went away, or an agent
//! restart).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ApiClient, Auth, ClientError, Failure, TlsFailure, chain, refusal};

/// Bytes read from the file per chunk of an upload.
const CHUNK: usize = 256 << 10;
/// How long a transfer may go without a byte either way.
const IDLE: Duration = Duration::from_secs(30);

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot {what} {path}: {source}")]
    Local {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn local(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Local { what, path, source }
}

type FileBody =
    StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

impl ApiClient {
    /// PUTs the file at `file` to `path`, streamed from the disk, trying
    /// each master in turn until one answers; `progress(sent, total)` is
    /// called as chunks go.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        file: &Path,
        progress: impl Fn(u64, u64) + Send + Sync + Clone + 'static,
    ) -> Result<T, TransferError> {
        let total = tokio::fs::metadata(file)
            .await
            .map_err(local("read", file))?
            .len();
        let mut failures = Vec::new();
        let mut identity_refused = false;
        for index in 0..self.endpoints.len() {
            let endpoint = self.endpoints[index].clone();
            let mut sender = match self.open::<FileBody>(index).await {
                Ok((s, _, _)) => s,
                Err(f) => {
                    identity_refused |= f.tls.is_some_and(TlsFailure::node_identity_refused);
                    failures.push(format!("{endpoint}: {}", f.message));
                    continue;
                }
            };
            let reader = tokio::fs::File::open(file)
                .await
                .map_err(local("open", file))?;
            let progress = progress.clone();
            let chunks = futures::stream::unfold((reader, 0u64), move |(mut reader, sent)| {
                let progress = progress.clone();
                async move {
                    let mut buf = vec![0u8; CHUNK];
                    match reader.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            progress(sent + n as u64, total);
                            Some((Ok(Frame::data(Bytes::from(buf))), (reader, sent + n as u64)))
                        }
                        Err(e) => Some((Err(e), (reader, sent))),
                    }
                }
            })
            .boxed();
            let mut req = Request::builder()
                .method(Method::PUT)
                .uri(path)
                .header(hyper::header::HOST, &endpoint)
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                .header(hyper::header::CONTENT_LENGTH, total);
            if let Auth::Bearer(token) = &self.auth {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(StreamBody::new(chunks))
                .expect("the request's parts are valid");
            let exchange = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let bytes = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, bytes))
            };
            // The master verifies the whole bundle before it answers.
            let (status, bytes) =
                match tokio::time::timeout(IDLE + Duration::from_secs(total / (1 << 20)), exchange)
                    .await
                {
                    Err(_) => {
                        failures.push(format!("{endpoint}: no answer in time"));
                        continue;
                    }
                    Ok(Err(e)) => {
                        let f = Failure::tls(&e);
                        identity_refused |= f.tls.is_some_and(TlsFailure::node_identity_refused);
                        failures.push(format!("{endpoint}: {}", f.message));
                        continue;
                    }
                    Ok(Ok(answer)) => answer,
                };
            if !status.is_success() {
                return Err(refusal(endpoint, status, &bytes).into());
            }
            return serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Decode {
                    endpoint,
                    reason: e.to_string(),
                }
                .into()
            });
        }
        Err(ClientError::Unreachable {
            failures: failures.join("; "),
            identity_refused,
        }
        .into())
    }

    /// GETs `path` into the file `dest`, keeping what it already holds and
    /// asking only for the rest (`Range: bytes=N-`); a master that cannot
    /// be reached, or that drops the connection mid-way, is followed by
    /// the next, from where the file ends. `progress(bytes, total)` is
    /// called as chunks arrive. Returns the file's length.
    pub async fn download(
        &self,
        path: &str,
        dest: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, TransferError> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dest)
            .await
            .map_err(local("open", dest))?;
        let mut failures = Vec::new();
        let mut identity_refused = false;
        for index in 0..self.endpoints.len() {
            let endpoint = self.endpoints[index].clone();
            let have = file.metadata().await.map_err(local("read", dest))?.len();
            let mut sender = match self.open::<http_body_util::Empty<Bytes>>(index).await {
                Ok((s, _, _)) => s,
                Err(f) => {
                    identity_refused |= f.tls.is_some_and(TlsFailure::node_identity_refused);
                    failures.push(format!("{endpoint}: {}", f.message));
                    continue;
                }
            };
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(hyper::header::HOST, &endpoint);
            if have > 0 {
                req = req.header(hyper::header::RANGE, format!("bytes={have}-"));
            }
            if let Auth::Bearer(token) = &self.auth {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(http_body_util::Empty::new())
                .expect("the request's parts are valid");
            let head = async {
                sender.ready().await?;
                sender.send_request(req).await
            };
            let resp = match tokio::time::timeout(IDLE, head).await {
                Err(_) => {
                    failures.push(format!("{endpoint}: no answer within {}s", IDLE.as_secs()));
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
            let total = match status {
                StatusCode::PARTIAL_CONTENT => resp
                    .headers()
                    .get(hyper::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit_once('/'))
                    .and_then(|(_, t)| t.parse::<u64>().ok()),
                StatusCode::OK => {
                    // The whole body again: start the file over.
                    file.set_len(0).await.map_err(local("truncate", dest))?;
                    resp.headers()
                        .get(hyper::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // The file already holds everything (or more: the
                    // caller's digest check finds that out).
                    return Ok(have);
                }
                _ => {
                    let bytes = resp
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let e = refusal(endpoint.clone(), status, &bytes);
                    // A master without the bundle: the next may have it.
                    if status == StatusCode::NOT_FOUND || status == StatusCode::SERVICE_UNAVAILABLE
                    {
                        failures.push(format!("{endpoint}: {e}"));
                        continue;
                    }
                    return Err(e.into());
                }
            }
            .unwrap_or(0);
            let mut body = resp.into_body().into_data_stream();
            let mut got = file.metadata().await.map_err(local("read", dest))?.len();
            let ended = loop {
                match tokio::time::timeout(IDLE, body.next()).await {
                    Err(_) => break Some(format!("no data for {}s", IDLE.as_secs())),
                    Ok(None) => break None,
                    Ok(Some(Err(e))) => break Some(chain(&e)),
                    Ok(Some(Ok(chunk))) => {
                        file.write_all(&chunk).await.map_err(local("write", dest))?;
                        got += chunk.len() as u64;
                        progress(got, total);
                    }
                }
            };
            file.flush().await.map_err(local("write", dest))?;
            match ended {
                None => return Ok(got),
                Some(why) => failures.push(format!("{endpoint}: the download broke off: {why}")),
            }
        }
        Err(ClientError::Unreachable {
            failures: failures.join("; "),
            identity_refused,
        }
        .into())
    }
}
