//! [`MetricsLayer`]: the tower layer around a gRPC server that counts every request by method
//! and gRPC status code (`bitmountain_requests_total{rpc,code}`) and times it to the end of its
//! response stream (`bitmountain_request_duration_seconds{rpc}`). The code comes from the
//! response headers (a trailers-only answer) or from the trailers at the end of the stream; a
//! stream the client dropped before its end counts as `CANCELLED`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt as _;
use http_body::{Body, Frame, SizeHint};

use crate::families::Metrics;

/// The layer; outermost, so requests the auth layer refuses are counted too.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The layer's service.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let metrics = Arc::clone(&self.metrics);
        let rpc = metrics.rpc_label(req.uri().path());
        let start = Instant::now();
        self.inner
            .call(req)
            .map(move |result| {
                let mut done = Done {
                    metrics,
                    rpc,
                    start,
                    code: None,
                };
                match result {
                    Ok(response) => {
                        done.code = grpc_status(response.headers());
                        Ok(response.map(|inner| MeteredBody {
                            inner,
                            done: Some(done),
                        }))
                    }
                    Err(e) => {
                        done.code = Some("TRANSPORT_ERROR".into());
                        Err(e)
                    }
                }
            })
            .boxed()
    }
}

/// The gRPC status code name in `grpc-status`, if the headers carry one.
fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(
        format!("{:?}", tonic::Code::from_i32(code))
            .chars()
            .fold(String::new(), |mut s, c| {
                if c.is_uppercase() && !s.is_empty() {
                    s.push('_');
                }
                s.push(c.to_ascii_uppercase());
                s
            }),
    )
}

/// Recorded once, when the response is over (or dropped).
struct Done {
    metrics: Arc<Metrics>,
    rpc: String,
    start: Instant,
    code: Option<String>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let code = self.code.as_deref().unwrap_or("CANCELLED");
        self.metrics
            .observe_request(&self.rpc, code, self.start.elapsed().as_secs_f64());
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it ends.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        done: Option<Done>,
    }
}

impl<B> std::fmt::Debug for MeteredBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(done)) = (frame.trailers_ref(), this.done.as_mut()) {
                    done.code = grpc_status(trailers).or(done.code.take());
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(done) = this.done.as_mut() {
                    done.code = Some("TRANSPORT_ERROR".into());
                }
                this.done.take();
            }
            Poll::Ready(None) => {
                if let Some(done) = this.done.as_mut() {
                    done.code.get_or_insert_with(|| "OK".into());
                }
                this.done.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_named_as_grpc_names_them() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "grpc-status",
            "5".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(grpc_status(&h).as_deref(), Some("NOT_FOUND"));
        h.insert(
            "grpc-status",
            "0".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(grpc_status(&h).as_deref(), Some("OK"));
        h.insert(
            "grpc-status",
            "16".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(grpc_status(&h).as_deref(), Some("UNAUTHENTICATED"));
    }
}
