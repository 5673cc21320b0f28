//! `bitmountain member ...`: change the metadata group's membership or leadership.

use std::io::Write as _;

use anyhow::Context as _;
use bitmountain_meta::types::MemberInfo;
use bitmountain_meta::MetaClient;

use super::common;
use super::config::ClientConfig;
use super::credentials::AuthArgs;

#[derive(Debug, clap::Args)]
pub struct ClusterArg {
    /// Any metadata member (host:port, or a comma-separated list).
    #[arg(long, env = "BITMOUNTAIN_META")]
    cluster: String,
    #[command(flatten)]
    auth: AuthArgs,
}

impl ClusterArg {
    /// A client of the members named, with the CA and token.
    fn client(&self) -> anyhow::Result<MetaClient> {
        let credentials = self.auth.credentials(&ClientConfig::load()?)?;
        Ok(MetaClient::new([self.cluster.as_str()])?.with_credentials(credentials))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// Add a member: first as a learner, promoted to voter once it has caught up. Start the new
    /// member first: `bitmountain meta --id ID --data DIR --listen ADDRESS` (no --bootstrap).
    Add {
        #[command(flatten)]
        cluster: ClusterArg,
        /// New member's id (unused so far).
        id: u64,
        /// New member's address.
        address: String,
        /// Keep it a learner (not voting).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member from the group.
    Remove {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Member id.
        id: u64,
    },
    /// Switch the group to a newer value format (docs/formats.md, "Value format 2") once every
    /// member's binary reads it: upgrade all members first. Asking for the current format
    /// only checks the members.
    SetValueFormat {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Value format (2: protobuf bundle records and commands).
        value_format: u32,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Member id of the new leader.
        to: u64,
    },
}

fn print_members(members: &[MemberInfo]) -> std::io::Result<()> {
    let mut out = common::stdout();
    for m in members {
        writeln!(out, "{:>4}  {:<24} {}", m.id, m.address, m.role)?;
    }
    Ok(())
}

pub fn run(command: MemberCommand) -> anyhow::Result<()> {
    let rt = common::client_runtime()?;
    match command {
        MemberCommand::Add {
            cluster,
            id,
            address,
            learner,
        } => {
            let client = cluster
                .client()?
                .with_timeout(std::time::Duration::from_secs(90));
            let members = rt
                .block_on(client.add_member(id, &address, learner))
                .with_context(|| format!("adding member {id} at {address}"))?;
            print_members(&members)?;
        }
        MemberCommand::Remove { cluster, id } => {
            let client = cluster.client()?;
            let members = rt
                .block_on(client.remove_member(id))
                .with_context(|| format!("removing member {id}"))?;
            print_members(&members)?;
        }
        MemberCommand::SetValueFormat {
            cluster,
            value_format,
        } => {
            let client = cluster
                .client()?
                .with_timeout(std::time::Duration::from_secs(30));
            let now = rt
                .block_on(client.set_value_format(value_format))
                .with_context(|| format!("switching to value format {value_format}"))?;
            writeln!(common::stdout(), "value format: {now}")?;
        }
        MemberCommand::TransferLeader { cluster, to } => {
            let client = cluster
                .client()?
                .with_timeout(std::time::Duration::from_secs(30));
            let leader = rt
                .block_on(client.transfer_leader(to))
                .with_context(|| format!("transferring leadership to member {to}"))?;
            writeln!(common::stdout(), "leader: member {leader}")?;
        }
    }
    Ok(())
}
