//! The client config file, so people do not repeat flags: `cluster`, `ca` and `token_file`,
//! in TOML at `$BITMOUNTAIN_CONFIG`, else `$XDG_CONFIG_HOME/bitmountain/config.toml`, else
//! `~/.config/bitmountain/config.toml`. Flags and environment variables come first; the file
//! fills in what they leave out. `bitmountain config set|unset|show` edits and prints it;
//! `bitmountain dev` writes it for its local cluster.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::common;

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// What the file holds. Unknown keys are refused, so a typo does not go unnoticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Any storage node, or a comma-separated list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The cluster CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// A file holding the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// `bitmountain config ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Set one setting: `cluster ADDR[,ADDR...]`, `ca FILE` or `token-file FILE` (files are
    /// stored as absolute paths).
    Set { key: Key, value: String },
    /// Remove one setting.
    Unset { key: Key },
    /// Print the file's path and settings.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A setting's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Key {
    Cluster,
    Ca,
    TokenFile,
}

impl ClientConfig {
    /// Where the file is.
    pub fn path() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("BITMOUNTAIN_CONFIG") {
            return Ok(PathBuf::from(p));
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => {
                let home = std::env::var_os("HOME").context(
                    "neither BITMOUNTAIN_CONFIG, XDG_CONFIG_HOME nor HOME is set, so there is no \
                     client config file",
                )?;
                PathBuf::from(home).join(".config")
            }
        };
        Ok(base.join("bitmountain").join("config.toml"))
    }

    /// The settings in the file; empty if there is no file.
    pub fn load() -> anyhow::Result<ClientConfig> {
        Self::load_from(&Self::path()?)
    }

    /// The settings in `path`; empty if there is no such file.
    pub fn load_from(path: &Path) -> anyhow::Result<ClientConfig> {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ClientConfig::default())
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading the config {}", path.display()))
            }
        };
        anyhow::ensure!(
            len <= MAX_CONFIG_BYTES,
            "the config {} holds {len} bytes, more than a client config ever needs",
            path.display()
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config {}", path.display()))?;
        toml::from_str(&text).with_context(|| {
            format!(
                "the config {} is not valid (keys: cluster, ca, token_file); fix or remove it",
                path.display()
            )
        })
    }

    /// Writes the settings to `path` (its directory made if missing), replacing the file
    /// whole.
    pub fn save_to(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("encoding the config")?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    let path = ClientConfig::path()?;
    let mut config = ClientConfig::load_from(&path)?;
    match cmd {
        ConfigCommand::Set { key, value } => {
            let file = || -> anyhow::Result<PathBuf> {
                let p = std::path::absolute(&value)
                    .with_context(|| format!("{value:?} is not a usable path"))?;
                anyhow::ensure!(p.is_file(), "{} is not a file", p.display());
                Ok(p)
            };
            match key {
                Key::Cluster => {
                    anyhow::ensure!(!value.trim().is_empty(), "give an address (host:port)");
                    config.cluster = Some(value.trim().to_owned());
                }
                Key::Ca => config.ca = Some(file()?),
                Key::TokenFile => config.token_file = Some(file()?),
            }
            config.save_to(&path)?;
        }
        ConfigCommand::Unset { key } => {
            match key {
                Key::Cluster => config.cluster = None,
                Key::Ca => config.ca = None,
                Key::TokenFile => config.token_file = None,
            }
            config.save_to(&path)?;
        }
        ConfigCommand::Show { json } => {
            if json {
                return common::print_json(&serde_json::json!({
                    "path": path,
                    "settings": config,
                }));
            }
            let mut out = common::stdout();
            writeln!(out, "# {}", path.display())?;
            write!(
                out,
                "{}",
                toml::to_string(&config).context("encoding the config")?
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_file_round_trips_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.toml");
        assert_eq!(
            ClientConfig::load_from(&path).unwrap(),
            ClientConfig::default()
        );
        let c = ClientConfig {
            cluster: Some("10.0.0.1:7700".into()),
            ca: Some("/etc/bm/ca.pem".into()),
            token_file: None,
        };
        c.save_to(&path).unwrap();
        assert_eq!(ClientConfig::load_from(&path).unwrap(), c);
        std::fs::write(&path, "clustr = \"x\"\n").unwrap();
        let e = ClientConfig::load_from(&path).unwrap_err();
        assert!(format!("{e:#}").contains("not valid"), "{e:#}");
    }
}
