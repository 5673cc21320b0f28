//! `bitmountain member ...`.

#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {}

pub fn run(command: MemberCommand) -> anyhow::Result<()> {
    match command {}
}
