//! `bitmountain token create|list|revoke`: the metadata group's access tokens. The secret of a
//! new token is printed once, here; the group keeps only its hash.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bitmountain_auth::{Role, Scope, TokenRecord};
use serde::Serialize;

use super::common::{self, ClusterArgs};
use super::units;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints the token (`bmt_...`) once on stdout.
    Create {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// reader, writer, curator, operator or admin.
        #[arg(long)]
        role: Role,
        /// Limit read, write and delete to bundles carrying this label (repeatable: all of
        /// them); a writer's uploads get these labels.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Refused from this long after now on, e.g. 90d or 12h (default: never).
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Duration>,
        /// A name for people (who or what uses the token).
        #[arg(long, default_value = "")]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every token: id, name, role, scope, expiry, revocation (never secrets).
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every node refuses it within seconds.
    Revoke {
        /// The token's id (16 hex digits, `token list`).
        id: String,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_expiry(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 90d, 12h)"))
}

/// A token as `token list` shows it.
#[derive(Debug, Serialize)]
struct TokenView {
    id: String,
    name: String,
    role: &'static str,
    scope: BTreeMap<String, String>,
    created_unix_ms: u64,
    /// Absent: never expires.
    expires_unix_ms: Option<u64>,
    /// Absent: not revoked.
    revoked_unix_ms: Option<u64>,
}

fn view(t: &TokenRecord) -> TokenView {
    TokenView {
        id: t.id.to_string(),
        name: t.name.clone(),
        role: t.role.as_str(),
        scope: t.scope.labels().clone(),
        created_unix_ms: t.created_unix_ms,
        expires_unix_ms: (t.expires_unix_ms != 0).then_some(t.expires_unix_ms),
        revoked_unix_ms: (t.revoked_unix_ms != 0).then_some(t.revoked_unix_ms),
    }
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            cluster,
            role,
            labels,
            expires,
            name,
            json,
        } => {
            let scope = Scope::parse(&labels).context("--label")?;
            scope.check_for(role).context("--label")?;
            let expires_unix_ms = match expires {
                Some(d) => bitmountain_meta::types::now_unix_ms()
                    .saturating_add(d.as_millis().try_into().unwrap_or(u64::MAX)),
                None => 0,
            };
            let (record, token) = cluster.ask_meta(|meta| async move {
                Ok(meta
                    .create_token(&name, role, &scope, expires_unix_ms)
                    .await?)
            })?;
            if json {
                #[derive(Serialize)]
                struct Created {
                    #[serde(flatten)]
                    token: TokenView,
                    secret: String,
                }
                return common::print_json(&Created {
                    token: view(&record),
                    secret: token.expose_secret(),
                });
            }
            eprintln!(
                "token {} ({}{}): printed once below, store it now (`--token-file`, \
                 `BITMOUNTAIN_TOKEN`); the cluster keeps only its hash",
                record.id,
                record.role.as_str(),
                if record.scope.is_unscoped() {
                    String::new()
                } else {
                    format!(", scope {}", record.scope)
                }
            );
            writeln!(common::stdout(), "{}", token.expose_secret())?;
            Ok(())
        }
        TokenCommand::List { cluster, json } => {
            let table = cluster.ask_meta(|meta| async move { Ok(meta.list_tokens().await?) })?;
            let views: Vec<TokenView> = table.tokens.iter().map(view).collect();
            if json {
                return common::print_json(&views);
            }
            print_list(&views)
        }
        TokenCommand::Revoke { id, cluster, json } => {
            let id = bitmountain_meta::wire::token_id_from_str(&id)?;
            let record =
                cluster.ask_meta(|meta| async move { Ok(meta.revoke_token(id).await?) })?;
            if json {
                return common::print_json(&view(&record));
            }
            writeln!(
                common::stdout(),
                "token {} ({}) revoked",
                record.id,
                record.name
            )?;
            Ok(())
        }
    }
}

fn print_list(views: &[TokenView]) -> anyhow::Result<()> {
    let mut out = common::stdout();
    writeln!(
        out,
        "{:<16}  {:<8}  {:<20}  {:<24}  STATE",
        "ID", "ROLE", "NAME", "SCOPE"
    )?;
    let now = bitmountain_meta::types::now_unix_ms();
    for v in views {
        let scope = v
            .scope
            .iter()
            .map(|(k, val)| format!("{k}={val}"))
            .collect::<Vec<_>>()
            .join(",");
        let state = match (v.revoked_unix_ms, v.expires_unix_ms) {
            (Some(_), _) => "revoked".to_string(),
            (None, Some(at)) if at <= now => "expired".to_string(),
            (None, Some(at)) => format!(
                "expires in {}",
                units::duration(Duration::from_millis(at - now))
            ),
            (None, None) => "live".to_string(),
        };
        writeln!(
            out,
            "{:<16}  {:<8}  {:<20}  {:<24}  {state}",
            v.id, v.role, v.name, scope
        )?;
    }
    Ok(())
}
