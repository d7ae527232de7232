use std::process::ExitCode;

use artifact_operator::{
    cli::{self, Cli, Command},
    telemetry, tls,
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_crypto_provider();

    match cli.command {
        Command::Version => {
            print!("{}", cli::version_text());
            ExitCode::SUCCESS
        }
        Command::Crds { output_dir } => match cli::crds(output_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: failed to write the CustomResourceDefinitions: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            telemetry::init(cli.log_format);
            match cli::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = %error, kind = error.metric_label(), "Operator failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
