//! One module per command group.

pub mod bundle;
pub mod demo;
pub mod durability;
pub mod fsutil;
pub mod member;
pub mod meta;
pub mod shard;
pub mod sharded_bundle;
pub mod status;
