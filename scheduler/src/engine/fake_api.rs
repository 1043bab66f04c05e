//! A minimal HTTP/1.1 server standing in for an API server in tests: it records requests
//! and answers each with what the test's responder says (a watch can be left hanging).

use std::sync::{Arc, Mutex};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: String,
}

pub enum Reply {
    Json(u16, String),
    /// A watch that never sends an event.
    Hang,
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct FakeApi {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start(responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responder: Responder = Arc::new(responder);
        let recs = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve(stream, responder.clone(), recs.clone()));
            }
        });
        FakeApi { url, requests, task }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Wait (up to 5s) for a request satisfying `f`.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Recorded) -> bool) -> Recorded {
        for _ in 0..500 {
            if let Some(r) = self.recorded().into_iter().find(|r| f(r)) {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no {what} request; got {:#?}", self.recorded());
    }
}

async fn serve(mut stream: TcpStream, responder: Responder, requests: Arc<Mutex<Vec<Recorded>>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
        buf.drain(..head_end + len);
        let mut first = head.lines().next().unwrap_or("").split_whitespace();
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let rec = Recorded {
            method,
            path: path.to_string(),
            query: query.to_string(),
            content_type: header("content-type").unwrap_or_default(),
            body,
        };
        let reply = responder(&rec);
        if let Ok(mut r) = requests.lock() {
            r.push(rec);
        }
        match reply {
            Reply::Json(code, body) => {
                let resp = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Hang => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                    )
                    .await;
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Answers as an API server would for the scheduler's writes: bindings succeed, events and
/// status patches are echoed back.
pub fn ok_writes(r: &Recorded) -> Reply {
    if r.path.ends_with("/binding") {
        return Reply::Json(201, r#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#.into());
    }
    if r.method == "POST" || r.method == "PATCH" {
        return Reply::Json(if r.method == "POST" { 201 } else { 200 }, r.body.clone());
    }
    Reply::Json(404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404,"reason":"NotFound"}"#.into())
}
