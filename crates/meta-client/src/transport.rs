//! Where calls to the metadata group are made: one lazily connected channel per member, the
//! member believed to lead, and [`Transport::call_until`], which sends a call there, follows
//! `not_leader` redirects (the `x-bitmountain-leader` address), rotates through the members on
//! connection failures, and retries retryable errors with backoff until the call's deadline.
//! Writes are idempotent (allocation by request id, commit, abort, delete, placement CAS), so
//! a retry after a lost answer is safe.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitmountain_proto::v1::meta_admin_client::MetaAdminClient;
use bitmountain_proto::v1::meta_service_client::MetaServiceClient;
use bitmountain_proto::{AuthChannel, Credentials};
use tokio::time::Instant;

use crate::error::{ErrorKind, Field, MetaError, Result};

/// Default deadline of one client call, retries included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Connect timeout per member.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First retry pause (doubles up to [`MAX_BACKOFF`]).
pub const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest retry pause. It bounds how long a caller keeps waiting after a new leader is up:
/// with 500 ms, failover times came in steps of 500 ms (1.15, 1.65, 2.15, 3.15 s), a retry
/// just missing the election cost half a second (docs/benchmarks.md).
pub const MAX_BACKOFF: Duration = Duration::from_millis(150);

/// What a gRPC call on a channel returns.
type Answer<T> = std::result::Result<tonic::Response<T>, tonic::Status>;

/// `host:port` from what a user or a leader header gave (`http://` and a trailing `/` off).
pub(crate) fn strip(addr: &str) -> String {
    addr.trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Member addresses from a list of `host:port` (comma lists accepted); at least one.
pub(crate) fn parse_endpoints<I, S>(endpoints: I) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let endpoints: Vec<String> = endpoints
        .into_iter()
        .flat_map(|s| s.as_ref().split(',').map(strip).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(MetaError::InvalidArgument {
            field: Field::MetadataAddresses,
            reason: "give at least one member address (host:port)".into(),
        });
    }
    Ok(endpoints)
}

#[derive(Debug, Default)]
struct State {
    leader: Option<String>,
    next: usize,
    channels: HashMap<String, AuthChannel>,
}

/// Where calls go: the members, the believed leader, one channel per member. Shared by the
/// client and its batch sender.
#[derive(Debug)]
pub(crate) struct Transport {
    endpoints: Vec<String>,
    state: Mutex<State>,
    timeout: Duration,
    credentials: Credentials,
}

impl Transport {
    pub(crate) fn new(
        endpoints: Vec<String>,
        timeout: Duration,
        credentials: Credentials,
    ) -> Arc<Self> {
        Arc::new(Self {
            endpoints,
            state: Mutex::new(State::default()),
            timeout,
            credentials,
        })
    }

    /// The deadline of one call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How calls connect.
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The members this transport was given.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// When a call started now must be answered by.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The member calls go to first.
    pub(crate) fn leader(&self) -> Option<String> {
        self.lock().leader.clone()
    }

    /// A `MetaService` call, retried until the default deadline.
    pub(crate) async fn service<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(MetaServiceClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Answer<T>>,
    {
        self.call_until(self.deadline(), |c| f(MetaServiceClient::new(c)))
            .await
    }

    /// A `MetaAdmin` call, retried until the default deadline.
    pub(crate) async fn admin<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(MetaAdminClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Answer<T>>,
    {
        self.call_until(self.deadline(), |c| f(MetaAdminClient::new(c)))
            .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn channel(&self, addr: &str) -> Result<AuthChannel> {
        let mut st = self.lock();
        if let Some(c) = st.channels.get(addr) {
            return Ok(c.clone());
        }
        let c = self
            .credentials
            .wrap(connect(&self.credentials, addr, Field::MetadataAddress)?);
        st.channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn pick(&self) -> String {
        let mut st = self.lock();
        if let Some(l) = &st.leader {
            return l.clone();
        }
        let i = st.next % self.endpoints.len();
        st.next = st.next.wrapping_add(1);
        self.endpoints[i].clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        self.lock().leader = addr;
    }

    /// Sends `f` to the believed leader until it answers, an error that retrying cannot fix
    /// comes back, or `deadline` passes.
    pub(crate) async fn call_until<T, F, Fut>(&self, deadline: Instant, f: F) -> Result<T>
    where
        F: Fn(AuthChannel) -> Fut,
        Fut: Future<Output = Answer<T>>,
    {
        let mut backoff = MIN_BACKOFF;
        let mut last;
        let mut tried: Vec<String> = Vec::new();
        loop {
            let addr = self.pick();
            if !tried.contains(&addr) {
                tried.push(addr.clone());
            }
            let channel = self.channel(&addr)?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (err, redirect) = match tokio::time::timeout(remaining, f(channel)).await {
                Ok(Ok(r)) => {
                    self.set_leader(Some(addr));
                    return Ok(r.into_inner());
                }
                Ok(Err(status)) => self.after_error(&addr, &status).await?,
                Err(_) => (
                    MetaError::Rpc {
                        endpoint: addr.clone(),
                        kind: ErrorKind::Timeout.as_str().into(),
                        message: "no answer".into(),
                    },
                    false,
                ),
            };
            last = err.to_string();
            if Instant::now() >= deadline {
                return Err(MetaError::NoMember {
                    endpoints: tried.join(","),
                    timeout_ms: self.timeout.as_millis() as u64,
                    last,
                });
            }
            if !redirect {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// What member `addr` answering `status` means for the next attempt: the error and
    /// whether it named a new leader to try at once; `Err` when retrying cannot help.
    async fn after_error(&self, addr: &str, status: &tonic::Status) -> Result<(MetaError, bool)> {
        let e = MetaError::from_status(addr, status);
        let transport_failure = matches!(e, MetaError::Rpc { .. })
            && matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            );
        match &e {
            MetaError::Raft {
                kind: ErrorKind::NotLeader,
                leader,
                ..
            } => {
                let l = leader.as_deref().map(strip);
                let fresh = l.as_ref().is_some_and(|l| *l != addr);
                self.set_leader(l);
                Ok((e, fresh))
            }
            // This member cannot serve reads until its snapshot is in; move on to another one
            // (as for a transport failure).
            MetaError::Raft {
                kind: ErrorKind::InstallingSnapshot,
                ..
            } => {
                self.set_leader(None);
                Ok((e, false))
            }
            _ if e.is_retryable() => Ok((e, false)),
            _ if transport_failure
                && !self.credentials.is_tls()
                && bitmountain_proto::connect::speaks_tls(addr).await =>
            {
                Err(MetaError::TlsRequired {
                    endpoint: addr.to_owned(),
                })
            }
            _ if transport_failure => {
                self.set_leader(None);
                Ok((e, false))
            }
            _ => Err(e),
        }
    }
}

/// One `MetaAdmin` call to exactly the member at `addr`: no redirect, no retry.
pub(crate) async fn admin_once<T, F, Fut>(addr: &str, credentials: &Credentials, f: F) -> Result<T>
where
    F: FnOnce(MetaAdminClient<AuthChannel>) -> Fut,
    Fut: Future<Output = Answer<T>>,
{
    let addr = strip(addr);
    let ch = credentials.wrap(connect(credentials, &addr, Field::Address)?);
    f(MetaAdminClient::new(ch))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| MetaError::from_status(&addr, &s))
}

/// A lazily connected channel to the member at `addr`.
fn connect(
    credentials: &Credentials,
    addr: &str,
    field: Field,
) -> Result<tonic::transport::Channel> {
    let ep = credentials
        .endpoint(addr)
        .map_err(|e| MetaError::InvalidArgument {
            field,
            reason: format!("{addr:?}: {e}"),
        })?;
    Ok(credentials.connect_lazy(ep.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true)))
}
