//! Keel's entry point: parse the command line, load settings, run.

use std::process::ExitCode;

use clap::Parser;
use keel::cli::{Cli, Command};
use keel::configuration::Settings;
use keel::startup::Application;

/// Exit status for an unusable configuration, distinct from a runtime failure.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
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
        Command::Serve => {
            keel::telemetry::init(&settings);
            let result = actix_web::rt::System::new().block_on(async move {
                Application::build(settings).await?.run_until_stopped().await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = ?err, "Keel failed");
                    eprintln!("keel: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
