//! `bitmountain meta`.

#[derive(Debug, clap::Args)]
pub struct MetaArgs {}

pub fn run(_args: MetaArgs) -> anyhow::Result<()> {
    anyhow::bail!("`bitmountain meta` is not built yet")
}
