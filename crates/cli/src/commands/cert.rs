//! `bitmountain cert init --dir DIR` and `bitmountain cert issue --ca-dir DIR --name NAME
//! --role meta|node --host H[,H...] -o DIR`: the cluster CA, and the certificate of one
//! metadata member or storage node, in the layout `meta` and `node` read from `--tls-dir`
//! (`bitmountain_auth::cert` does the work).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use bitmountain_auth::cert::{self, PeerRole};

use super::common;

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Create the cluster CA: DIR/ca.pem and DIR/ca.key (mode 0600). Never overwrites one.
    Init(InitArgs),
    /// Issue a member's or node's certificate, signed by the CA: OUT/cert.pem, OUT/key.pem
    /// (mode 0600) and a copy of ca.pem — the directory `meta`/`node` take as --tls-dir.
    Issue(IssueArgs),
    /// A whole small cluster's certificates at once, for a deployment's set-up step: the CA in
    /// DIR/ca and DIR/NAME for every member and node, each valid for its name and --host. Made
    /// only where missing, so running it again changes nothing.
    Cluster(ClusterArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Where the certificates go (DIR/NAME for each member and node).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Where the CA is (made if missing); default DIR/ca. Keep it apart from what members
    /// and nodes can read: its key signs certificates.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// The members' names (also their host names).
    #[arg(
        long,
        value_name = "NAME[,NAME...]",
        value_delimiter = ',',
        required = true
    )]
    meta: Vec<String>,
    /// The nodes' names (also their host names).
    #[arg(
        long,
        value_name = "NAME[,NAME...]",
        value_delimiter = ',',
        required = true
    )]
    node: Vec<String>,
    /// More hosts every certificate is valid for (say `localhost,127.0.0.1`, for clients
    /// and health checks on the same host).
    #[arg(long = "host", value_name = "H[,H...]", value_delimiter = ',')]
    hosts: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to create the CA (created if missing, mode 0700).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The CA's directory (`cert init --dir`).
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// The member's or node's name (letters, digits, `.`, `_`, `-`), written into the
    /// certificate with its role.
    #[arg(long)]
    name: String,
    /// `meta` for a member of the metadata group, `node` for a storage node.
    #[arg(long, value_name = "meta|node", value_parser = parse_role)]
    role: PeerRole,
    /// Every IP address and DNS name the member or node is reached at (clients check the
    /// one they connect to).
    #[arg(
        long = "host",
        value_name = "H[,H...]",
        value_delimiter = ',',
        required = true
    )]
    hosts: Vec<String>,
    /// Where to write the files (created if missing, mode 0700).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_role(text: &str) -> Result<PeerRole, String> {
    text.parse().map_err(|e: cert::CertError| e.to_string())
}

pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Init(args) => init(args),
        CertCommand::Issue(args) => issue(args),
        CertCommand::Cluster(args) => cluster(args),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let ca = cert::init_ca(&args.dir)?;
    if args.json {
        return common::print_json(&serde_json::json!({
            "common_name": ca.common_name,
            "ca_cert": ca.cert,
            "ca_key": ca.key,
        }));
    }
    let mut out = common::stdout();
    writeln!(out, "created the cluster CA {:?}", ca.common_name)?;
    writeln!(
        out,
        "  certificate: {} (clients verify the cluster with it: --ca)",
        ca.cert.display()
    )?;
    writeln!(
        out,
        "  private key: {} (mode 0600; only `cert issue` needs it: keep it away from the cluster)",
        ca.key.display()
    )?;
    writeln!(
        out,
        "next: bitmountain cert issue --ca-dir {} --name NAME --role meta|node --host ADDR -o DIR",
        args.dir.display()
    )?;
    Ok(())
}

fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let ca = args.ca_dir.clone().unwrap_or_else(|| args.dir.join("ca"));
    let mut out = common::stdout();
    if cert::ensure_ca(&ca)? {
        writeln!(out, "created the cluster CA in {}", ca.display())?;
    }
    let all = args
        .meta
        .iter()
        .map(|n| (n, PeerRole::Meta))
        .chain(args.node.iter().map(|n| (n, PeerRole::Node)));
    for (name, role) in all {
        let hosts: Vec<String> = std::iter::once(name.clone())
            .chain(args.hosts.iter().cloned())
            .collect();
        let dir = args.dir.join(name);
        if cert::ensure_issued(&ca, name, role, &hosts, &dir)? {
            writeln!(out, "issued {role} {name} into {}", dir.display())?;
        }
    }
    Ok(())
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let issued = cert::issue(&args.ca_dir, &args.name, args.role, &args.hosts, &args.out)?;
    if args.json {
        return common::print_json(&serde_json::json!({
            "role": issued.identity.role.as_str(),
            "name": issued.identity.name,
            "uri": issued.identity.uri(),
            "hosts": issued.hosts,
            "not_after_unix": issued.not_after_unix,
            "cert": issued.cert,
            "key": issued.key,
            "ca": issued.ca,
        }));
    }
    let until = UNIX_EPOCH + Duration::from_secs(u64::try_from(issued.not_after_unix).unwrap_or(0));
    let mut out = common::stdout();
    writeln!(
        out,
        "issued {} ({}) for {}, valid until {}",
        issued.identity,
        issued.identity.uri(),
        issued.hosts.join(", "),
        humantime::format_rfc3339_seconds(until)
    )?;
    writeln!(out, "  {}", issued.cert.display())?;
    writeln!(out, "  {} (mode 0600)", issued.key.display())?;
    writeln!(out, "  {}", issued.ca.display())?;
    writeln!(
        out,
        "start the {} with --tls-dir {}",
        match issued.identity.role {
            PeerRole::Meta => "member",
            PeerRole::Node => "node",
        },
        args.out.display()
    )?;
    Ok(())
}
