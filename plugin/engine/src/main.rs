//! The plugin binary the server starts. Run by hand, it explains how to
//! register it and exits with status 1; `--version` prints the version,
//! its SHA-256 and the register command.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use lockstep_plugin::{VERSION, backend, clock};
use vault_plugin_sdk::{ServeError, ServeOptions, serve};

fn main() -> ExitCode {
    if std::env::args().nth(1).is_some_and(|a| a == "--version" || a == "version") {
        return print_version();
    }
    vault_plugin_sdk::log::init("lockstep");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lockstep: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let options = ServeOptions { version: VERSION.to_string(), multiplexing: true };
    let clock = clock::from_environment();
    let factory = Arc::new(move |setup| Ok(backend(setup, clock.clone())));
    match runtime.block_on(serve(factory, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ServeError::Handshake(error)) => {
            // A person ran the binary: plain text, not a log record.
            eprintln!("lockstep: {error}");
            ExitCode::from(1)
        }
        Err(error) => {
            tracing::error!(%error, "plugin stopped");
            // Not eprintln!: with its server gone, stderr may be a pipe no
            // one reads, and a failed write must not turn into a panic.
            let _ = writeln!(std::io::stderr(), "lockstep: {error}");
            ExitCode::from(3)
        }
    }
}

/// `--version`: this executable's version, checksum and register command.
fn print_version() -> ExitCode {
    let read = std::env::current_exe().and_then(|exe| Ok((std::fs::read(&exe)?, exe)));
    match read {
        Ok((binary, exe)) => {
            let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            print!("{}", lockstep_plugin::version_text(&binary, &name));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lockstep: cannot read this executable to checksum it: {error}");
            ExitCode::from(2)
        }
    }
}
