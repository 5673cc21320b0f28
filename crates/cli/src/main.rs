//! The `bitmountain` binary: one executable for every role. Daemons (`meta`, `node`, and `dev`,
//! the embedded local cluster), client commands (`put`, `get`, `cat`, `ls`, `export`, `rm`,
//! `status`), operator commands, and the offline tools that work on bundle and shard files with
//! nothing but this binary (disaster recovery needs them).
//!
//! Each command group lives in its own module under `commands/`, named as the command; this file
//! only parses arguments, dispatches, and reports errors. Errors are `anyhow` here and nowhere
//! below.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bitmountain",
    version,
    about = "Bit Mountain: an erasure-coded archival storage cluster"
)]
struct Cli {
    /// How log lines are written to standard error: `text` for people, `json` (one object per
    /// line) for log collectors. The level comes from BITMOUNTAIN_LOG (default `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BITMOUNTAIN_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BITMOUNTAIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local cluster in this process: one metadata member and several storage nodes.
    Dev(commands::dev::DevArgs),
    /// Upload a directory as one bundle; prints the bundle id.
    Put(commands::archive::PutArgs),
    /// Download one file of a bundle: BUNDLE_ID/PATH.
    Get(commands::archive::GetArgs),
    /// Print one file of a bundle to stdout: BUNDLE_ID/PATH.
    Cat(commands::archive::CatArgs),
    /// List bundles (optionally by label), or the files of one bundle.
    Ls(commands::archive::LsArgs),
    /// Write a bundle's whole MIME stream (readable by any MIME library and `bundle` tools).
    Export(commands::archive::ExportArgs),
    /// Delete a bundle (`--reason` required; refused while retained or held).
    Rm(commands::archive::RmArgs),
    /// Every bundle with its files, digests, labels and storage locations (`--jsonl`: one JSON
    /// object per bundle and line).
    Inventory(commands::inventory::InventoryArgs),
    /// Read files back and check their SHA-256 against the digest recorded at ingest
    /// (`fixity check --bundle ID | --label k=v | --all`).
    #[command(subcommand)]
    Fixity(commands::fixity::FixityCommand),
    /// The audit trail: who did what, and what was refused (`audit [--since T] [--bundle ID]
    /// [--agent NAME] [--action A] [--json]`); `audit verify` checks its hash chain.
    Audit(commands::audit::AuditArgs),
    /// Extend a bundle's retention (`retention set ID --until DATE`).
    #[command(subcommand)]
    Retention(commands::preserve::RetentionCommand),
    /// Put a bundle under a legal hold or clear it (`hold set|clear ID --reason TEXT`).
    #[command(subcommand)]
    Hold(commands::preserve::HoldCommand),
    /// Run a storage node (`node --data DIR --disk DIR --listen ADDR --meta ADDR`), or drain,
    /// remove or restore one (`node drain|remove|up ID`).
    Node(commands::node::NodeCli),
    /// Mark a disk failed, drain it, remove it, or mark it healthy again.
    #[command(subcommand)]
    Disk(commands::disk::DiskCommand),
    /// Repair progress (`repair status`) and throttles (`repair throttle`).
    #[command(subcommand)]
    Repair(commands::repair::RepairCommand),
    /// Start a scrub pass now on every node (or one).
    Scrub(commands::scrub::ScrubArgs),
    /// Move shards onto new or emptier disks, within a byte budget.
    Rebalance(commands::rebalance::RebalanceArgs),
    /// Offline tools for bundle files (MIME multipart/mixed with an index).
    #[command(subcommand)]
    Bundle(commands::bundle::BundleCommand),
    /// Offline tools for erasure-coded shard files.
    #[command(subcommand)]
    Shard(commands::shard::ShardCommand),
    /// Disaster recovery: what a set of disks holds, with no service running (`recover scan`).
    #[command(subcommand)]
    Recover(commands::recover::RecoverCommand),
    /// Estimate the probability of data loss for an erasure code or replication.
    Durability(commands::durability::DurabilityArgs),
    /// Run a member of the metadata group (raft-rs on RocksDB).
    Meta(commands::meta::MetaCli),
    /// Change the metadata group's membership or leadership.
    #[command(subcommand)]
    Member(commands::member::MemberCommand),
    /// Show the cluster: members, leader, nodes, disks, bundle counts.
    Status(commands::status::StatusArgs),
    /// Create the cluster CA (`cert init`), and certificates for members and nodes
    /// (`cert issue`).
    #[command(subcommand)]
    Cert(commands::cert::CertCommand),
    /// The client config file (cluster, CA, token file), so commands need no flags.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Access tokens: create (the token is printed once), list, revoke.
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Ask a member or node whether it serves (gRPC health); exit 0 if it does.
    Health(commands::health::HealthArgs),
    /// Run the offline demo: pack a tree, shard it, destroy shards, read every file back.
    Demo(commands::demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Dev(args) => commands::dev::run(args),
        Command::Put(args) => commands::archive::put(args),
        Command::Get(args) => commands::archive::get(args),
        Command::Cat(args) => commands::archive::cat(args),
        Command::Ls(args) => commands::archive::ls(args),
        Command::Export(args) => commands::archive::export(args),
        Command::Rm(args) => commands::archive::rm(args),
        Command::Inventory(args) => commands::inventory::run(args),
        Command::Fixity(cmd) => commands::fixity::run(cmd),
        Command::Audit(args) => commands::audit::run(args),
        Command::Retention(cmd) => commands::preserve::retention_command(cmd),
        Command::Hold(cmd) => commands::preserve::hold_command(cmd),
        Command::Node(args) => commands::node::run(args),
        Command::Disk(cmd) => commands::disk::run(cmd),
        Command::Repair(cmd) => commands::repair::run(cmd),
        Command::Scrub(args) => commands::scrub::run(args),
        Command::Rebalance(args) => commands::rebalance::run(args),
        Command::Bundle(cmd) => commands::bundle::run(cmd),
        Command::Shard(cmd) => commands::shard::run(cmd),
        Command::Recover(cmd) => commands::recover::run(cmd),
        Command::Durability(args) => commands::durability::run(args),
        Command::Meta(args) => commands::meta::run(args),
        Command::Member(cmd) => commands::member::run(cmd),
        Command::Status(args) => commands::status::run(args),
        Command::Cert(cmd) => commands::cert::run(cmd),
        Command::Token(cmd) => commands::token::run(cmd),
        Command::Config(cmd) => commands::config::run(cmd),
        Command::Demo(args) => commands::demo::run(args),
        Command::Health(args) => commands::health::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`bitmountain ls | head -1`): it has what it
        // wanted, and an error message would only be noise.
        Err(_) if commands::common::stdout_closed() => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
