//! One module per command group.

pub mod archive;
pub mod bundle;
pub mod demo;
pub mod dev;
pub mod durability;
pub mod fsutil;
pub mod heal;
pub mod member;
pub mod meta;
pub mod node;
pub mod shard;
pub mod sharded_bundle;
pub mod status;
