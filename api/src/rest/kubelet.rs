//! `pods/log`, `exec`, `attach` and `portforward`: proxied to the kubelet of the pod's
//! node over TLS (the kubelet's certificate must chain to the cluster CA; this master
//! presents its kubelet client certificate), as Kubernetes' API server does. Logs stream
//! back as they come; exec/attach/port-forward are protocol upgrades (SPDY or WebSocket,
//! whatever client and kubelet agree on) spliced byte for byte after the kubelet's 101.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::serve::Body;
use crate::status::ApiError;
use crate::storage::{self, Freshness};

/// Connecting (TCP and TLS) and the kubelet's response head must each come within this.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A refused upgrade's body (no length, kept-alive connection) is read for at most this.
const ERROR_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A kubelet response head larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;
/// A kubelet's refusal of an upgrade is read up to this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;
const DEFAULT_KUBELET_PORT: i64 = 10250;
/// Request headers an upgrade carries through to the kubelet.
const UPGRADE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
    "user-agent",
];

/// The container a log/exec/attach request means: `container=`, else the only one.
fn container(ctx: &Ctx, pod: &Value) -> Result<String, ApiError> {
    let name = ctx.name();
    let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| pod.pointer(&format!("/spec/{l}")).and_then(Value::as_array).into_iter().flatten())
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match ctx.query.container.clone() {
        Some(c) if names.contains(&c.as_str()) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None => {
            let main: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            match main.as_slice() {
                [only] => Ok(only.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                ))),
            }
        }
    }
}

/// The kubelet's address: the node's InternalIP (else ExternalIP) and its kubelet port.
pub(crate) fn kubelet_endpoint(node: &Value, node_name: &str) -> Result<(String, u16), ApiError> {
    let addrs = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .map(str::to_string)
    };
    let host = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .ok_or_else(|| ApiError::bad_request(format!("node {node_name} has no InternalIP or ExternalIP address")))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    let port =
        u16::try_from(port).map_err(|_| ApiError::bad_request(format!("node {node_name} has kubelet port {port}")))?;
    Ok((host, port))
}

pub(crate) type KubeletStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(ctx: &Ctx, host: &str, port: u16) -> Result<KubeletStream, ApiError> {
    let tls = ctx.api.kubelet_tls.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this API server has no kubelet client certificate: pod logs, exec, attach and port-forward are off",
        )
    })?;
    dial(tls, host, port)
        .await
        .map_err(|e| ApiError::internal(format!("error dialing the kubelet at https://{host}:{port}: {e}")))
}

/// TCP and TLS to a kubelet, each within [`CONNECT_TIMEOUT`]; the kubelet's certificate
/// must chain to the cluster CA.
pub(crate) async fn dial(
    tls: std::sync::Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> Result<KubeletStream, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("no connection after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp))
        .await
        .map_err(|_| format!("no TLS handshake after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())
}

/// A path segment, percent-encoded (names are validated, but never trusted on a request line).
fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The body of a kubelet's refusal: `Content-Length` bytes if it says, else until EOF, never
/// more than `MAX_ERROR_BODY` and never longer than `ERROR_BODY_TIMEOUT`.
async fn error_body(s: &mut KubeletStream, headers: &HeaderMap, rest: Bytes) -> Bytes {
    let want = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_ERROR_BODY)
        .min(MAX_ERROR_BODY);
    let mut body = rest.to_vec();
    if body.len() < want {
        let need = (want - body.len()) as u64;
        let _ = tokio::time::timeout(ERROR_BODY_TIMEOUT, s.take(need).read_to_end(&mut body)).await;
    }
    body.truncate(want);
    Bytes::from(body)
}

/// Read the kubelet's response head; the bytes after it are returned too.
async fn read_head(s: &mut KubeletStream) -> Result<(u16, HeaderMap, Bytes), ApiError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.map_err(|e| ApiError::internal(format!("reading from the kubelet: {e}")))?;
        if n == 0 {
            return Err(ApiError::internal("the kubelet closed the connection before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = resp.code.unwrap_or(502);
                let mut map = HeaderMap::new();
                for h in resp.headers.iter() {
                    if let (Ok(k), Ok(v)) =
                        (http::HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
                    {
                        map.append(k, v);
                    }
                }
                return Ok((code, map, buf.split_off(len).freeze()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ApiError::internal("the kubelet's response head is too large"))
            }
            Err(e) => return Err(ApiError::internal(format!("the kubelet's response does not parse: {e}"))),
        }
    }
}

/// The rest of a stream as a response body: `first`, then whatever follows until EOF (or
/// until the client goes away, or the server stops).
fn stream_body<R: AsyncRead + Unpin + Send + 'static>(first: Bytes, mut r: R, stop: CancellationToken) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(first).await.is_err() {
            return;
        }
        loop {
            let mut buf = vec![0u8; 16 * 1024];
            let n = tokio::select! {
                r = r.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
            };
            buf.truncate(n);
            if tx.send(Bytes::from(buf)).await.is_err() {
                return;
            }
        }
    });
    let frames =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(frames))
}

/// Proxy one pod subresource request to the pod's kubelet.
pub async fn proxy<B>(ctx: &Ctx, req: Request<B>, sub: &str) -> Result<Response<Body>, ApiError>
where
    B: Send + 'static,
{
    let ns = ctx.namespace().unwrap_or_default().to_string();
    let name = ctx.name().to_string();
    let (kv, _) = storage::get(&ctx.api.store, &ctx.key(&name), Freshness::Latest).await?;
    let pod = storage::decode(&kv.ok_or_else(|| ctx.not_found(&name))?)?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_string();
    let (ns_seg, name_seg) = (seg(&ns), seg(&name));
    let path = match sub {
        "log" => format!("/containerLogs/{ns_seg}/{name_seg}/{}", seg(&container(ctx, &pod)?)),
        "exec" | "attach" => format!("/{sub}/{ns_seg}/{name_seg}/{}", seg(&container(ctx, &pod)?)),
        _ => format!("/portForward/{ns_seg}/{name_seg}"),
    };
    let node = storage::get_cluster(&ctx.api, "nodes", &node_name)
        .await?
        .ok_or_else(|| ApiError::not_found("nodes", "", &node_name))?;
    let (host, port) = kubelet_endpoint(&node, &node_name)?;
    // The options pass through; the container is in the kubelet's path instead.
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).filter(|(k, _)| k != "container"),
        )
        .finish();
    let query = if query.is_empty() { query } else { format!("?{query}") };
    let upgrade = req.headers().contains_key(http::header::UPGRADE);
    tracing::debug!(pod = %name, namespace = %ns, node = %node_name, sub, upgrade, "proxying to the kubelet");
    let mut s = connect(ctx, &host, port).await?;
    // HTTP/1.0 for a plain request: the body is the rest of the stream, never chunked.
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut head = format!("{} {path}{query} HTTP/1.{}\r\nHost: {authority}\r\n", req.method(), u8::from(upgrade));
    for (k, v) in req.headers() {
        let keep = if upgrade { UPGRADE_HEADERS.contains(&k.as_str()) } else { k == "user-agent" || k == "accept" };
        if let (true, Ok(v)) = (keep, v.to_str()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.map_err(|e| ApiError::internal(format!("writing to the kubelet: {e}")))?;
    let (code, headers, rest) = tokio::time::timeout(CONNECT_TIMEOUT, read_head(&mut s)).await.map_err(|_| {
        ApiError::internal(format!("the kubelet at {authority} did not answer within {CONNECT_TIMEOUT:?}"))
    })??;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = if upgrade && code == 101 {
        let stop = ctx.api.stop.clone();
        tokio::spawn(async move {
            let client = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "the client's upgrade failed");
                    return;
                }
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            if !rest.is_empty() && client.write_all(&rest).await.is_err() {
                return;
            }
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut s) => {
                    tracing::debug!(result = ?r, "kubelet stream ended");
                }
                _ = stop.cancelled() => {}
            }
        });
        Response::new(BodyExt::boxed(http_body_util::Empty::new()))
    } else if upgrade {
        // The kubelet refused the upgrade: pass its answer on.
        Response::new(BodyExt::boxed(http_body_util::Full::new(error_body(&mut s, &headers, rest).await)))
    } else {
        Response::new(stream_body(rest, s, ctx.api.stop.clone()))
    };
    *resp.status_mut() = status;
    for (k, v) in &headers {
        let hop = matches!(k.as_str(), "content-length" | "transfer-encoding" | "keep-alive");
        let pass = if code == 101 { true } else { !hop && k != "connection" };
        if pass {
            resp.headers_mut().append(k.clone(), v.clone());
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_kubelet_is_found_by_internal_ip_and_its_port() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10999}}}});
        assert_eq!(kubelet_endpoint(&node, "n1").unwrap(), ("10.0.0.5".into(), 10999));
        let bare = json!({"status": {"addresses": [{"type": "ExternalIP", "address": "192.0.2.1"}]}});
        assert_eq!(kubelet_endpoint(&bare, "n1").unwrap().1, 10250);
        assert_eq!(kubelet_endpoint(&json!({}), "n1").unwrap_err().code, 400);
    }
}
