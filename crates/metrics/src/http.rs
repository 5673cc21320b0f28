//! The `--metrics-listen` endpoint, plain HTTP/1.1 (hyper): `GET /metrics` (OpenMetrics text),
//! `GET /healthz` (200 while the process runs), `GET /readyz` (200 when the process serves,
//! 503 otherwise), and the process's [`Pages`] if it has any (a storage node's web console).
//! Scrapers live inside the operator's network, like the metrics of most storage systems;
//! the endpoint answers only `GET`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::families::Metrics;

/// Scrapers served at once; more wait for a slot.
pub const MAX_CONNECTIONS: usize = 32;
/// A connection open longer than this is closed (a scrape takes milliseconds).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoint serves.
#[derive(Clone)]
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    /// Called before each scrape: a member sets the cluster's gauges from its view.
    pub refresh: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Whether the process serves (`/readyz`).
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Other pages served beside the metrics.
    pub pages: Option<Arc<dyn Pages>>,
}

/// Pages a process serves on its metrics listener besides `/metrics`, `/healthz` and
/// `/readyz` (a storage node's web console).
pub trait Pages: Send + Sync {
    /// The answer to `GET path` with these request headers, `None` if `path` is not one of
    /// these pages (then the endpoint answers 404).
    fn get(&self, path: &str, headers: &HeaderMap) -> Option<BoxFuture<'static, Page>>;
}

/// One answer of [`Pages`].
#[derive(Debug, Clone)]
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Extra response headers (caching, content security policy).
    pub headers: Vec<(http::header::HeaderName, &'static str)>,
}

impl Page {
    /// A 200 answer.
    pub fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Page {
        Page {
            status: StatusCode::OK,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// An answer with `status` and a plain-text reason.
    pub fn error(status: StatusCode, reason: impl Into<String>) -> Page {
        let mut body = reason.into();
        body.push('\n');
        Page {
            status,
            content_type: "text/plain",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: http::header::HeaderName, value: &'static str) -> Page {
        self.headers.push((name, value));
        self
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

/// Serves `endpoint` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(answer(&req, &endpoint).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection"),
                Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn answer(req: &Request<Incoming>, endpoint: &Endpoint) -> Response<Full<Bytes>> {
    respond(page(req, endpoint).await)
}

async fn page(req: &Request<Incoming>, endpoint: &Endpoint) -> Page {
    const TEXT: &str = "text/plain";
    if req.method() != Method::GET {
        return Page::error(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    match req.uri().path() {
        "/metrics" => {
            if let Some(refresh) = &endpoint.refresh {
                refresh();
            }
            Page::ok(OPENMETRICS, endpoint.metrics.encode())
        }
        "/healthz" => Page::ok(TEXT, "ok\n"),
        "/readyz" if (endpoint.ready)() => Page::ok(TEXT, "ready\n"),
        "/readyz" => Page::error(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        path => match endpoint
            .pages
            .as_ref()
            .and_then(|p| p.get(path, req.headers()))
        {
            Some(page) => page.await,
            None => Page::error(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz, /readyz",
            ),
        },
    }
}

fn respond(page: Page) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(page.body));
    *r.status_mut() = page.status;
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(page.content_type),
    );
    for (name, value) in page.headers {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    r
}
