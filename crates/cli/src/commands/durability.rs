//! `bitmountain durability`.

#[derive(Debug, clap::Args)]
pub struct DurabilityArgs {}

pub fn run(_args: DurabilityArgs) -> anyhow::Result<()> {
    anyhow::bail!("`bitmountain durability` is not built yet")
}
