//! `bitmountain bundle ...`.

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {}

pub fn run(command: BundleCommand) -> anyhow::Result<()> {
    match command {}
}
