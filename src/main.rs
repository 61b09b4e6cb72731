//! Keel's entry point: parse the command line, load settings, run.

use std::process::ExitCode;

use clap::Parser;
use keel::cli::{AdminCommand, Cli, Command, StoreCommand, VaultCommand};
use keel::configuration::Settings;
use keel::startup::Application;

/// mimalloc instead of glibc's malloc: the WebSocket fan-out allocates a frame and a mailbox
/// envelope per client per event on one thread and frees them on another, and glibc's allocator
/// spent a fifth of the server's CPU on that in the load test (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for an unusable configuration, distinct from a runtime failure.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Before anything creates a file: the store, secrets, backups and logs are private (0600
    // files, 0700 directories). docs/SECURITY.md, "Files".
    #[cfg(unix)]
    keel_actors::store::permissions::set_private_umask();
    // `keel_startup_seconds` counts from here.
    keel_actors::startup_clock::mark_process_start();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("keel: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match settings.to_redacted_toml() {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("keel: cannot print the configuration: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Vault(VaultCommand::Keygen) => report(keel::vault_cli::keygen()),
        Command::Backtest(args) => report(keel::backtest_cli::backtest(&args)),
        Command::Data(command) => report(keel::backtest_cli::data(&command)),
        Command::Restore(args) => report(keel::backup_cli::restore(&settings, &args)),
        Command::Store(StoreCommand::Seed(args)) => {
            report(keel::store_cli::seed_store(&settings, &args))
        }
        Command::Store(StoreCommand::Stats(args)) => {
            report(keel::store_cli::stats(&settings, &args).map(|text| print!("{text}")))
        }
        Command::Admin(AdminCommand::ResetPassword(args)) => {
            report(keel::admin_cli::reset_password_command(&settings, &args))
        }
        Command::Backup(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(rt) => report(rt.block_on(keel::backup_cli::backup(&settings, &args))),
                Err(err) => report(Err(err.into())),
            }
        }
        Command::Vault(VaultCommand::Rotate) => {
            keel::telemetry::init(&settings);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(rt) => report(rt.block_on(keel::vault_cli::rotate_keys(&settings))),
                Err(err) => report(Err(err.into())),
            }
        }
        Command::Serve => {
            keel::telemetry::init(&settings);
            let result = actix_web::rt::System::new().block_on(async move {
                Application::build(settings).await?.run_until_stopped().await
            });
            if let Err(err) = &result {
                tracing::error!(error = ?err, "Keel failed");
            }
            report(result)
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keel: {err:#}");
            ExitCode::FAILURE
        }
    }
}
