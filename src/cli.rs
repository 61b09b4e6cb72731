//! Command line: `keel [serve]`, `keel check-config`, `keel --version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keel: an actor-model trading runtime.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, long_about = None)]
pub struct Cli {
    /// A TOML file layered over the embedded defaults (environment variables still win).
    #[arg(long, short, global = true, value_name = "PATH", env = "KEEL_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration with secrets redacted, or say which key is invalid.
    CheckConfig,
    /// Manage the vault's master key.
    #[command(subcommand)]
    Vault(VaultCommand),
}

/// `keel vault …`.
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Print a new random master key (base64 of 32 bytes) for `vault.master_key`.
    Keygen,
    /// Re-wrap every stored credential under a new master key. Run it with Keel stopped.
    ///
    /// The new key comes from KEEL_VAULT_NEW_MASTER_KEY (development generates one when unset).
    /// Interrupted, it leaves every credential readable with the old and new keys together;
    /// running it again finishes the job.
    Rotate,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default() {
        let cli = Cli::try_parse_from(["keel"]).unwrap();
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["keel", "check-config", "--config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig)));
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        let cli = Cli::try_parse_from(["keel", "vault", "rotate"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Vault(VaultCommand::Rotate))));
    }
}
