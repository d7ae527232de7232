use std::{process::ExitCode, time::Duration};

use artifact_operator::{
    cli::{self, Cli, Command},
    loader, migrate, telemetry, tls,
};
use clap::Parser;

/// Time that blocking work, such as a DNS lookup still under way, gets to finish at shutdown
/// before the process exits anyway.
const BLOCKING_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_crypto_provider();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the Tokio runtime must start");
    let code = runtime.block_on(execute(cli));
    // Dropping the runtime would wait for blocking tasks without limit, so a DNS lookup that
    // hangs could keep a stopped operator alive.
    runtime.shutdown_timeout(BLOCKING_SHUTDOWN_TIMEOUT);
    code
}

async fn execute(cli: Cli) -> ExitCode {
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
        Command::Loader(args) => {
            telemetry::init(cli.log_format);
            loader::run(*args).await
        }
        Command::Run(args) => {
            telemetry::init(cli.log_format);
            match cli::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = %error, kind = error.metric_label(), "Operator failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate(args) => migrate::execute(*args, cli.log_format).await,
    }
}
