//! Typed errors for bad model inputs. Each names the offending value and says what to do.

/// A model input that cannot describe a real cluster.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurabilityError {
    #[error("cannot parse code {0:?}: write it as K+M with K data and M parity shards, e.g. 10+4")]
    BadCode(String),
    #[error("code {k}+{m}: K must be at least 1 (and K+M at most 255, the Reed-Solomon limit)")]
    CodeOutOfRange { k: u32, m: u32 },
    #[error("--copies {0}: the number of copies must be between 1 and 16")]
    CopiesOutOfRange(u32),
    #[error(
        "{scheme} puts {width} shards on {width} different failure domains, but the cluster has \
         only {domains} ({what}); use a narrower code or more disks/nodes"
    )]
    TooFewDomains {
        scheme: String,
        width: u32,
        domains: u32,
        what: &'static str,
    },
    #[error(
        "--disks {disks} is not a multiple of --disks-per-node {disks_per_node}; every node holds \
         the same number of disks in this model"
    )]
    UnevenNodes { disks: u32, disks_per_node: u32 },
    #[error("{what} is {value}: it must be greater than zero")]
    NotPositive { what: &'static str, value: String },
    #[error(
        "annual failure rate {0}: must be in (0, 10] failures per disk-year \
         (e.g. 0.015 for 1.5% AFR; values above 1 only make sense for stress tests)"
    )]
    AfrOutOfRange(f64),
    #[error("{what} {value}: must be between 0 and {max}")]
    RateOutOfRange {
        what: &'static str,
        value: f64,
        max: f64,
    },
    #[error("fill fraction {0}: must be in (0, 1], the share of each disk holding shard data")]
    FillOutOfRange(f64),
    #[error("scheme share {0}: must be in (0, 1], the part of the stored data in that code")]
    ShareOutOfRange(f64),
    #[error("{what} {value}: must be in (0, 1000] years")]
    YearsOutOfRange { what: &'static str, value: f64 },
    #[error(
        "simulation of {events} expected events is too large (limit {limit}); lower --trials or \
         --years, or the failure rates"
    )]
    SimulationTooLarge { events: f64, limit: f64 },
}

pub type Result<T> = std::result::Result<T, DurabilityError>;
