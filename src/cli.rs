//! Command line: `keel [serve]`, `keel check-config`, `keel backup`, `keel restore`,
//! `keel store seed`, `keel store stats`, `keel --version`.

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
    /// Run a strategy over a trade file: the bot engine with paper fills on a simulated clock.
    Backtest(BacktestArgs),
    /// Data tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Write a consistent backup of the running Keel's store to FILE (docs/OPERATIONS.md).
    Backup(BackupArgs),
    /// Restore a backup into the store directory. Run it with Keel stopped.
    Restore(RestoreArgs),
    /// Store tools. Run them with Keel stopped.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Operator tools on users. Run them with Keel stopped.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// `keel admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set a new password for the account with this email and end every session of it (its
    /// access tokens are refused from the next start on, its refresh tokens never work again).
    /// Without --password-stdin a random password is generated and printed once.
    ResetPassword(ResetPasswordArgs),
}

/// `keel admin reset-password`.
#[derive(Debug, clap::Args)]
pub struct ResetPasswordArgs {
    /// The account's email.
    pub email: String,
    /// Read the new password from the first line of standard input instead of generating one.
    #[arg(long)]
    pub password_stdin: bool,
    /// The store directory; default store.path.
    #[arg(long)]
    pub store: Option<PathBuf>,
}

/// `keel store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Fill an empty store with users, running paper bots on the sim venue and a trading history
    /// (orders and their fills, a few orders per bot left open), written as bots write it: for
    /// measuring start-up on a big store. Every user's password is `keel-seed-password`.
    Seed(SeedArgs),
    /// Print what the store holds by kind: rows, bytes, bytes written in the last day and the
    /// oldest record (the running server publishes the same figures on /metrics).
    Stats(StatsArgs),
}

/// `keel store stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The store directory; default store.path.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `keel store seed`.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Users to create (`seed-1@example.com`, …).
    #[arg(long, value_name = "U")]
    pub users: usize,
    /// Paper bots on the sim venue, marked running, spread over the users.
    #[arg(long, value_name = "B")]
    pub bots: usize,
    /// Historical orders in all, spread over the bots; each fills at once except the last three
    /// of each bot, which stay open.
    #[arg(long, value_name = "O")]
    pub orders: u64,
    /// The store directory; default store.path.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Threads writing history; 0 = one per CPU core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `keel backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (atomically: nothing is left at FILE on failure).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Read a stopped Keel's store directly instead of asking the running server.
    #[arg(long)]
    pub offline: bool,
    /// The running Keel's base URL; default from server.host and server.port.
    #[arg(long, value_name = "URL", conflicts_with = "offline")]
    pub url: Option<String>,
}

/// `keel restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Restore over a non-empty store (which is kept beside it, renamed).
    #[arg(long)]
    pub force: bool,
    /// The store directory; default store.path.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// `keel backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Strategy kind: ema_cross, rsi, grid or dca (not with --wasm).
    #[arg(long, required_unless_present = "wasm", conflicts_with = "wasm")]
    pub strategy: Option<String>,
    /// A strategy module (docs/STRATEGY_ABI.md) to run instead of a built-in kind, with
    /// --params as its params.
    #[arg(long, value_name = "FILE.wasm")]
    pub wasm: Option<PathBuf>,
    /// Strategy parameters as JSON, e.g. '{"fast":100,"slow":400,"qty":"0.001"}'.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// Trades: Keel's CSV (ts,price,qty,side), a Binance trades/aggTrades dump, or a Keel
    /// recording (`*.krec`, trades and quotes).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// The instrument (its tick and step sizes come from the sim venue's table).
    #[arg(long, default_value = "BTCUSDT")]
    pub symbol: String,
    /// Fee per fill, basis points.
    #[arg(long, default_value = "10")]
    pub fee_bps: rust_decimal::Decimal,
    /// Starting quote balance.
    #[arg(long, default_value = "10000")]
    pub starting_quote: rust_decimal::Decimal,
    /// Take-profit of a bracket around each entry, percent (with --bracket-sl).
    #[arg(long, requires = "bracket_sl")]
    pub bracket_tp: Option<rust_decimal::Decimal>,
    /// Stop-loss of a bracket around each entry, percent (with --bracket-tp).
    #[arg(long, requires = "bracket_tp")]
    pub bracket_sl: Option<rust_decimal::Decimal>,
    /// Skip (and count) rows that do not parse instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the equity curve (ts,equity after each fill) to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub equity_csv: Option<PathBuf>,
    /// Draw the equity curve into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// `keel data …`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a seeded synthetic trade series (the sim venue's random walk) as Keel's CSV.
    Synth {
        /// Number of trades.
        #[arg(long)]
        ticks: u64,
        /// Seed; the same seed gives the same series.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Instrument.
        #[arg(long, default_value = "BTCUSDT")]
        symbol: String,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
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
        let cli = Cli::try_parse_from([
            "keel", "store", "seed", "--users", "2", "--bots", "3", "--orders", "10", "--store",
            "/tmp/x",
        ])
        .unwrap();
        let Some(Command::Store(StoreCommand::Seed(args))) = cli.command else {
            panic!("not a seed: {cli:?}")
        };
        assert_eq!((args.users, args.bots, args.orders), (2, 3, 10));
        assert_eq!(args.store, Some(PathBuf::from("/tmp/x")));
    }
}
