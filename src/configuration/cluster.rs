//! `[cluster]`: cluster mode (docs/CLUSTER.md). Off by default: a node runs on its own.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

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
}

impl ClusterSettings {
    /// Checks `[cluster]` (only when it is enabled).
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !self.enabled {
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
        Ok(())
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
        for (key, value, named) in [
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
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }
}
