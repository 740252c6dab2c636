//! The plugin binary the server starts. Run by hand, it explains how to
//! register it and exits with status 1; `--version` prints the version,
//! its SHA-256 and the register command; `--install DIR` copies it into a
//! plugin directory (an init container beside the server does that, from
//! an image holding nothing else) and prints the same.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use lockstep_plugin::{VERSION, backend, clock};
use vault_plugin_sdk::{ServeError, ServeOptions, serve};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "version") => return print_version(),
        Some("--install") => {
            return match &args[1..] {
                [dir] => install(std::path::Path::new(dir)),
                _ => {
                    eprintln!("lockstep: usage: vault-plugin-secrets-lockstep --install <plugin directory>");
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
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

/// `--install DIR`: copies this executable into `DIR` under its own name,
/// whole or not at all (a temporary file, synced, then renamed), and prints
/// what `--version` prints for the copy.
fn install(dir: &std::path::Path) -> ExitCode {
    use std::os::unix::fs::OpenOptionsExt as _;

    let fail = |what: &str, error: std::io::Error| {
        eprintln!("lockstep: --install: {what}: {error}");
        ExitCode::from(2)
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => return fail("cannot find this executable", error),
    };
    let binary = match std::fs::read(&exe) {
        Ok(binary) => binary,
        Err(error) => return fail(&format!("cannot read {}", exe.display()), error),
    };
    let name =
        exe.file_name().map_or_else(|| "vault-plugin-secrets-lockstep".into(), |n| n.to_string_lossy().into_owned());
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return fail(&dir.display().to_string(), std::io::Error::other("not a directory")),
        Err(error) => return fail(&dir.display().to_string(), error),
    }
    let target = dir.join(&name);
    let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&partial)
        .and_then(|mut file| {
            file.write_all(&binary)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, &target))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return fail(&format!("cannot write {}", target.display()), error);
    }
    print!("installed {}\n{}", target.display(), lockstep_plugin::version_text(&binary, &name));
    ExitCode::SUCCESS
}
