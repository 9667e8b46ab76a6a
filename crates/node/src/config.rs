//! A node's configuration file, `node.toml` in the node's directory.
//!
//! ```toml
//! party = "ROK"
//!
//! [api]                      # local API and console, for this party's people
//! listen = "127.0.0.1:7100"
//!
//! [federation]               # mutual-TLS HTTP/2, for peers' nodes
//! listen = "127.0.0.1:7101"
//!
//! [[peers]]                  # one or more addresses per party, tried in order
//! party = "PRC"
//! addresses = ["127.0.0.1:7201"]
//!
//! [delivery]                 # all optional
//! batch_max = 128
//! retry_delay_ms_min = 100
//! retry_delay_ms_max = 30000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub party: String,
    pub api: Listen,
    pub federation: Listen,
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub delivery: Delivery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub party: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Envelopes per federation request.
    pub batch_max: u32,
    pub retry_delay_ms_min: i64,
    pub retry_delay_ms_max: i64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            batch_max: 128,
            retry_delay_ms_min: 100,
            retry_delay_ms_max: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

pub const CONFIG_FILE: &str = "node.toml";
pub const STORE_FILE: &str = "node.db";

impl Config {
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| liaison_core::diagnostic::LineIndex::new(text).locate(text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim_end_matches('.').to_owned(),
            }
        })?;
        if liaison_core::ids::PartyId::new(&cfg.party).is_err() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: format!("party: `{}` is not a party id", cfg.party),
            });
        }
        Ok(cfg)
    }

    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn peer_addresses(&self, party: &str) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.party == party)
            .flat_map(|p| p.addresses.clone())
            .collect()
    }
}

/// Files of a node directory.
#[derive(Debug, Clone)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    pub fn config(&self) -> PathBuf {
        self.0.join(CONFIG_FILE)
    }
    pub fn store(&self) -> PathBuf {
        self.0.join(STORE_FILE)
    }
    pub fn key(&self, party: &str) -> PathBuf {
        self.0.join("keys").join(format!("{party}.key"))
    }
    pub fn cert(&self) -> PathBuf {
        self.0.join("tls").join("cert.pem")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_is_located() {
        let text = "party = \"ROK\"\n[api]\nlisten = \"nowhere\"\n[federation]\nlisten = \"127.0.0.1:1\"\n";
        let err = Config::parse("node.toml", text).unwrap_err().to_string();
        assert!(err.starts_with("node.toml:3:"), "{err}");
        let err = Config::parse("node.toml", "party = \"ROK\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("node.toml:"), "{err}");
        let ok = Config::parse("n", "party = \"ROK\"\n[api]\nlisten = \"127.0.0.1:0\"\n[federation]\nlisten = \"127.0.0.1:0\"\n[[peers]]\nparty = \"PRC\"\naddresses = [\"127.0.0.1:9\"]\n").unwrap();
        assert_eq!(ok.peer_addresses("PRC"), vec!["127.0.0.1:9".to_owned()]);
        assert_eq!(Config::parse("n", &ok.to_toml()).unwrap(), ok);
    }
}
