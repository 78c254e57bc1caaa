//! The `switchyard` binary: reads the configuration, binds, and runs the server.

use switchyard::config::Config;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: with glibc's, a 10-minute soak of 15,000
/// streams grew RSS by 19 MiB after the ramp, with mimalloc by 3 MiB (2 of them the log's
/// retained events); BENCHMARKS.md ("Soak") has both curves.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let config = Config::from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = switchyard::check_config(&config, config.addr) {
        eprintln!("switchyard: {e}");
        std::process::exit(2);
    }
    raise_open_file_limit();
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "switchyard: cannot listen on SWITCHYARD_ADDR={}: {e}",
                config.addr
            );
            std::process::exit(1);
        }
    };
    if let Err(e) = switchyard::run(listener, config, switchyard::shutdown_signal()).await {
        eprintln!("switchyard: {e}");
        std::process::exit(1);
    }
}

/// Raises the soft limit on open files to the hard limit (each connection holds one file
/// descriptor); the connection budget is then kept below it (`AppState::open`).
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(open_file_limit = limit, "open-file limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}
