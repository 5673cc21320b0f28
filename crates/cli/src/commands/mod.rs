//! One module per command group, named as the command; `common`, `credentials` and `units`
//! serve them all.

pub mod archive;
pub mod audit;
pub mod bagit;
pub mod bagit_export;
pub mod bundle;
pub mod cert;
pub mod common;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod dev;
pub mod dev_tls;
pub mod disk;
pub mod durability;
pub mod durability_live;
pub mod fixity;
pub mod fsutil;
pub mod health;
pub mod inventory;
pub mod manifest;
pub mod member;
pub mod meta;
pub mod meta_backup;
pub mod meta_recover;
pub mod node;
pub mod preserve;
pub mod rebalance;
pub mod recover;
pub mod repair;
pub mod scrub;
pub mod shard;
pub mod sharded_bundle;
pub mod status;
pub mod token;
pub mod units;
