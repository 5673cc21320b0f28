//! `bitmountain health ADDR`: asks a member or node the standard gRPC health service whether
//! it serves; exit status 0 if it does. What container health checks and probes run, so an
//! image needs no shell or curl.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bitmountain_proto::Credentials;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::common;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The member's or node's address (host:port).
    address: String,
    /// The cluster CA (`ca.pem`): check over TLS. Without it, plaintext (for `--insecure`).
    #[arg(long, value_name = "FILE", env = "BITMOUNTAIN_CA")]
    ca: Option<PathBuf>,
    /// Longest wait for the answer (connecting included).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let credentials = match &args.ca {
        Some(path) => Credentials::tls(
            &std::fs::read(path)
                .with_context(|| format!("reading the cluster CA {}", path.display()))?,
            None,
        ),
        None => Credentials::insecure(),
    };
    let address = args.address.clone();
    let status = common::client_runtime()?.block_on(async move {
        let endpoint = credentials
            .endpoint(&address)
            .with_context(|| format!("{address:?} is not an address (host:port)"))?
            .connect_timeout(args.timeout)
            .timeout(args.timeout);
        let channel = credentials.connect_lazy(endpoint);
        let answer = HealthClient::new(credentials.wrap(channel))
            .check(HealthCheckRequest::default())
            .await;
        match answer {
            Ok(r) => Ok(r.into_inner().status()),
            Err(s)
                if !credentials.is_tls()
                    && bitmountain_proto::connect::speaks_tls(&address).await =>
            {
                Err(anyhow::anyhow!(
                    bitmountain_proto::connect::needs_ca_message(&address)
                ))
                .context(s.message().to_owned())
            }
            Err(s) => Err(anyhow::anyhow!("{address}: {}", s.message())),
        }
    })?;
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{}: {}",
        args.address,
        status.as_str_name()
    );
    writeln!(common::stdout(), "{}: serving", args.address)?;
    Ok(())
}
