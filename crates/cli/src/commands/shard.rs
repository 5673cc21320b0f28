//! `bitmountain shard ...`.

#[derive(Debug, clap::Subcommand)]
pub enum ShardCommand {}

pub fn run(command: ShardCommand) -> anyhow::Result<()> {
    match command {}
}
