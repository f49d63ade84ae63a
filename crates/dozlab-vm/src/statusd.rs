//! `--status-listen`: a tiny HTTP server for Kubernetes probes.
//!
//! `GET /healthz` answers 200 while the supervisor runs; `GET /readyz`
//! answers 200 only while the VM is ready (503 with the phase otherwise);
//! `GET /status` returns the current `status.json`. Plain hyper, no
//! framework, to keep the supervisor small.

use dozlab_core::vmstatus::{Phase, VmStatus};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds `addr` (fails early, before the VM starts, if the port is taken).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves probes from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, status: watch::Receiver<VmStatus>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let reply = respond(&req, &status.borrow());
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The answer to one request given the current status.
pub fn respond<B>(req: &Request<B>, status: &VmStatus) -> Response<Full<Bytes>> {
    let text = |code: StatusCode, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("static response")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if status.phase == Phase::Ready => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", status.phase),
        ),
        "/status" => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec_pretty(status).unwrap_or_default(),
            )))
            .expect("static response"),
        _ => text(
            StatusCode::NOT_FOUND,
            "try /healthz, /readyz or /status\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn status(phase: Phase) -> VmStatus {
        VmStatus {
            phase,
            vmm: "qemu".into(),
            accel: "tcg".into(),
            pid: 1,
            vmm_pid: None,
            started_at: 0,
            boot_ms: None,
            vm_ip: "172.16.0.2".into(),
            message: None,
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_follow_the_phase() {
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = watch::channel(status(Phase::Booting));
        let server = tokio::spawn(serve(l, rx));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.ends_with("booting\n"),
            "{r}"
        );
        tx.send_modify(|s| s.phase = Phase::Ready);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/status").await.contains("\"phase\": \"ready\""));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
