//! `[cluster]`: cluster mode (docs/CLUSTER.md). Off by default: a node runs on its own.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::sink::PgSslMode;
use super::{SettingsError, invalid, redact};

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Whether this node joins a cluster.
    pub enabled: bool,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// The NATS server (with JetStream), `nats://host:port`.
    pub nats_url: String,
    /// The cluster's name: the prefix of its NATS subjects, stream and bucket.
    pub name: String,
    /// Orders a node reserves from an account's shared order budget per round trip to NATS.
    pub order_budget_block: u32,
    /// While NATS cannot be reached, each node grants at most this fraction (1/n) of an
    /// account's order budget per window.
    pub order_budget_fallback_nodes: u32,
    /// The cluster's Postgres, the system of record for identity; unset or empty: each node
    /// keeps its own in sled.
    #[serde(default, serialize_with = "redact")]
    pub postgres_url: Option<SecretString>,
    /// Plain TCP, or TLS with the server verified, to `postgres_url`.
    pub postgres_sslmode: PgSslMode,
    /// PEM file of the CA(s) Postgres's certificate must chain to (`verify-full`).
    pub postgres_ca_file: PathBuf,
    /// This node's HTTP address for the other nodes (`http(s)://host:port`); empty: none.
    pub advertise_url: String,
}

impl ClusterSettings {
    /// Checks `[cluster]` (only when it is enabled).
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !self.enabled {
            if self.postgres_url().is_some() {
                return Err(invalid(
                    "cluster.postgres_url",
                    "is set but cluster.enabled is false: Postgres is the system of record only \
                     in cluster mode (a single node keeps its records in its own store)",
                ));
            }
            return Ok(());
        }
        if !keel_actors::cluster::valid_name(&self.node_id) {
            return Err(invalid(
                "cluster.node_id",
                "must be 1 to 64 letters, digits, `-` or `_` when the cluster is enabled",
            ));
        }
        if !keel_actors::cluster::valid_name(&self.name) {
            return Err(invalid("cluster.name", "must be 1 to 64 letters, digits, `-` or `_`"));
        }
        if !(self.nats_url.starts_with("nats://") || self.nats_url.starts_with("tls://")) {
            return Err(invalid("cluster.nats_url", "must start with nats:// or tls://"));
        }
        if !(1..=100).contains(&self.order_budget_block) {
            return Err(invalid("cluster.order_budget_block", "must be 1 to 100"));
        }
        if !(1..=64).contains(&self.order_budget_fallback_nodes) {
            return Err(invalid("cluster.order_budget_fallback_nodes", "must be 1 to 64"));
        }
        if !self.advertise_url.is_empty() {
            let parsed = reqwest::Url::parse(&self.advertise_url).ok();
            let usable = parsed.is_some_and(|url| {
                matches!(url.scheme(), "http" | "https") && url.host_str().is_some()
            });
            if !usable {
                return Err(invalid(
                    "cluster.advertise_url",
                    "must be an http:// or https:// URL with a host, or empty",
                ));
            }
        }
        self.validate_postgres()
    }

    fn validate_postgres(&self) -> Result<(), SettingsError> {
        if self.postgres_sslmode == PgSslMode::VerifyFull
            && self.postgres_ca_file.as_os_str().is_empty()
        {
            return Err(invalid(
                "cluster.postgres_ca_file",
                "postgres_sslmode verify-full needs the CA file the server's certificate chains to",
            ));
        }
        let Some(config) = self.record_config() else { return Ok(()) };
        let detail = |err: keel_actors::sink::SinkError| match err {
            keel_actors::sink::SinkError::Config(detail) => detail,
            other => other.to_string(),
        };
        keel_actors::sink::connection_config(
            &config.url,
            &config.tls,
            keel_actors::pg::CONNECT_TIMEOUT,
        )
        .map_err(|err| invalid("cluster.postgres_url", detail(err)))?;
        if let keel_actors::sink::PgTls::VerifyFull { ca_file } = &config.tls {
            keel_actors::sink::tls::roots(ca_file)
                .map_err(|err| invalid("cluster.postgres_ca_file", detail(err)))?;
        }
        Ok(())
    }

    fn postgres_url(&self) -> Option<&SecretString> {
        self.postgres_url.as_ref().filter(|u| !u.expose_secret().trim().is_empty())
    }

    /// The system of record, in cluster mode with `postgres_url` set.
    pub fn record_config(&self) -> Option<keel_actors::pg::RecordConfig> {
        if !self.enabled {
            return None;
        }
        Some(keel_actors::pg::RecordConfig {
            url: self.postgres_url()?.clone(),
            tls: match self.postgres_sslmode {
                PgSslMode::Disable => keel_actors::sink::PgTls::Disable,
                PgSslMode::VerifyFull => {
                    keel_actors::sink::PgTls::VerifyFull { ca_file: self.postgres_ca_file.clone() }
                }
            },
        })
    }

    /// What the runtime joins, when cluster mode is on.
    pub(super) fn cluster_config(&self) -> Option<keel_actors::cluster::ClusterConfig> {
        self.enabled.then(|| keel_actors::cluster::ClusterConfig {
            node_id: self.node_id.clone(),
            nats_url: self.nats_url.clone(),
            name: self.name.clone(),
            order_budget: keel_actors::cluster::BudgetConfig {
                block: self.order_budget_block,
                fallback_nodes: self.order_budget_fallback_nodes,
            },
            users_in_postgres: self.postgres_url().is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::env;

    #[test]
    fn cluster_mode_is_off_by_default_and_checked_only_when_on() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        assert!(!settings.cluster.enabled);
        assert!(settings.cluster.cluster_config().is_none());
        // Off, a name that could not be a subject prefix is not looked at.
        let off = env(&[("KEEL__CLUSTER__NAME", "a.b")]);
        assert!(Settings::load_with_env(None, off).is_ok());

        let on = |key: &'static str, value: &'static str| {
            let vars = env(&[("KEEL__CLUSTER__ENABLED", "true"), (key, value)]);
            Settings::load_with_env(None, vars).map_err(|e| e.to_string())
        };
        let settings = on("KEEL__CLUSTER__NODE_ID", "node-b").unwrap();
        let config = settings.cluster.cluster_config().unwrap();
        assert_eq!((config.node_id.as_str(), config.name.as_str()), ("node-b", "keel"));
        assert_eq!(config.order_budget, keel_actors::cluster::BudgetConfig::default());
        assert!(settings.cluster.record_config().is_none(), "no Postgres unless its URL is set");
        let url = "postgres://keel:hunter2@127.0.0.1:5432/keel";
        let record = on("KEEL__CLUSTER__POSTGRES_URL", url).unwrap().cluster.record_config();
        assert_eq!(record.map(|r| r.tls), Some(keel_actors::sink::PgTls::Disable));
        assert!(on("KEEL__CLUSTER__ADVERTISE_URL", "https://10.0.0.7:8080").is_ok());
        for (key, value, named) in [
            ("KEEL__CLUSTER__POSTGRES_URL", "mysql://root:hunter2@x/y", "cluster.postgres_url"),
            ("KEEL__CLUSTER__POSTGRES_SSLMODE", "verify-full", "cluster.postgres_ca_file"),
            ("KEEL__CLUSTER__ADVERTISE_URL", "10.0.0.7:8080", "cluster.advertise_url"),
            ("KEEL__CLUSTER__ADVERTISE_URL", "nats://10.0.0.7:8080", "cluster.advertise_url"),
            ("KEEL__CLUSTER__NAME", "a.b", "cluster.name"),
            ("KEEL__CLUSTER__NAME", "a>", "cluster.name"),
            ("KEEL__CLUSTER__NODE_ID", "", "cluster.node_id"),
            ("KEEL__CLUSTER__NATS_URL", "http://127.0.0.1:4222", "cluster.nats_url"),
            ("KEEL__CLUSTER__ORDER_BUDGET_BLOCK", "0", "cluster.order_budget_block"),
            (
                "KEEL__CLUSTER__ORDER_BUDGET_FALLBACK_NODES",
                "0",
                "cluster.order_budget_fallback_nodes",
            ),
        ] {
            let err = on(key, value).unwrap_err();
            assert!(err.contains(named) && !err.contains("hunter2"), "{key}={value}: {err}");
        }
    }

    #[test]
    fn a_postgres_url_without_cluster_mode_is_refused() {
        let vars = env(&[("KEEL__CLUSTER__POSTGRES_URL", "postgres://keel@127.0.0.1/keel")]);
        let err = Settings::load_with_env(None, vars).unwrap_err().to_string();
        assert!(err.contains("cluster.postgres_url") && err.contains("cluster mode"), "{err}");
        let empty = env(&[("KEEL__CLUSTER__POSTGRES_URL", "")]);
        assert!(Settings::load_with_env(None, empty).is_ok(), "empty is none");
    }
}
