//! Prometheus metrics for Bit Mountain, with `prometheus-client`.
//!
//! - [`families`]: every metric family, by the names dashboards and alerts depend on (a
//!   contract: see `docs/formats.md`, "Metrics"), in one process-wide [`Metrics`]
//!   ([`global`]).
//! - [`http`]: the `--metrics-listen` endpoint: `/metrics` (text exposition), `/healthz`
//!   (the process runs), `/readyz` (it serves: the caller decides what that means), and a
//!   process's other [`Pages`] (a storage node's web console).
//! - [`layer`]: the tower layer around a gRPC server that counts every request by method and
//!   status code and times it to the end of its response stream.
//!
//! Gauges of the cluster as a whole are set by the metadata members from their own view when
//! scraped (a follower exports its own, possibly older, view); counters of work done are
//! incremented where the work is (the node's coordinator, the scrubber).

pub mod families;
pub mod http;
pub mod layer;

pub use families::{global, Metrics};
pub use http::{serve, Endpoint, Page, Pages};
pub use layer::MetricsLayer;
