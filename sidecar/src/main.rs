//! `lockstep-sidecar`: parse the command line and configuration, start
//! logging and the runtime, run the library. Exit codes: see
//! [`lockstep_sidecar::cli`].

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use lockstep_sidecar::cli::{self, Cli, Command, EXIT_FAILURE, EXIT_OK};

use lockstep_sidecar::clock::SystemClock;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lockstep-sidecar: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match cli.command {
        Command::Get(args) => runtime.block_on(cli::get(&args)),
        Command::Call(args) => runtime.block_on(cli::call(&args)),
        Command::Watch(args) => runtime.block_on(cli::watch(&args)),
        Command::Probe(args) => runtime.block_on(cli::probe(&args)),
        Command::CheckConfig(args) => match cli::load(&args) {
            Ok((config, _)) => match cli::check_credentials(&config) {
                Ok(()) => cli::print_out("configuration is valid"),
                Err(error) => cli::config_failure(&error),
            },
            Err(code) => code,
        },
        Command::Run(args) => {
            let (config, source) = match cli::load(&args) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            cli::init_tracing(&config.log);
            let result = runtime.block_on(async {
                let shutdown = lockstep_sidecar::shutdown_on_signals();
                lockstep_sidecar::run_with(config, Arc::new(SystemClock), Some(source), shutdown).await
            });
            match result {
                Ok(()) => ExitCode::from(EXIT_OK),
                Err(error) => {
                    eprintln!("lockstep-sidecar: {error}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}
