//! Durability model: how likely a Bit Mountain cluster is to lose data, computed two independent
//! ways from the cluster's own parameters, so the claim "erasure coding beats replication" comes
//! with numbers a skeptic can check.
//!
//! * [`model`]: the inputs ([`ClusterParams`]: a [`Scheme`] — RS(k,m) or n copies — disks, nodes,
//!   disk size, fill, AFR, repair bandwidth, detection delay, bundle size) and what follows from
//!   them: usable bytes, number of bundles, disks sharing a rebuild, time to rebuild one disk.
//! * [`markov`]: method 1, a birth–death Markov chain for one placement group, mapped to the
//!   cluster through the number of independent groups the declustered placement implies; plus the
//!   classic closed forms (Patterson/Gibson/Katz; Chen et al.) and Backblaze's published method,
//!   used as checks.
//! * [`sim`]: method 2, a seeded event-driven Monte Carlo simulation with declustered placement,
//!   rebuilds that share bandwidth, and correlated node and rack failures.
//! * [`live`]: the model applied to a running cluster (its disks, fill, measured repair rate
//!   and observed failures against a stated prior AFR).
//! * [`compare`]: the five-scheme comparison at equal raw capacity, and an SVG plot of loss
//!   probability against repair speed.
//!
//! Pure library: no I/O; the plot is returned as a `String`. Units are in names (`disk_bytes`,
//! `repair_bytes_per_sec`, `rebuild_secs`); AFR is failures per disk-year.

pub mod compare;
pub mod error;
pub mod live;
pub mod markov;
pub mod model;
mod rng;
pub mod sim;
pub mod units;

pub use compare::{compare, svg_plot, ComparisonRow};
pub use error::{DurabilityError, Result};
pub use live::{
    estimate as live_estimate, AfrPrior, CodeBytes, CodeEstimate, DiskSample, LiveCluster,
    LiveEstimate,
};
pub use markov::{analyze, analyze_with, Analytic, Discipline};
pub use model::{comparison_schemes, ClusterParams, Scheme};
pub use sim::{simulate, Estimate, RepairModel, SimConfig, SimResult};
