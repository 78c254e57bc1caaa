//! The `switchyard-bare` binary: the bare fan-out server of [`switchyard_bench::bare`],
//! the floor the scale scenario is measured against.

use std::net::TcpListener;

use clap::Parser;

/// A bare fan-out server: `GET /sub/<topic>` streams, `POST /pub/<topic>` writes its body
/// as one SSE `data:` frame to every stream, one blocking write per subscriber from one
/// thread per shard. The floor of a broadcast on this machine; not a server to use.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BARE_ADDR", default_value = "127.0.0.1:3999")]
    addr: String,
    /// Fan-out threads (shards of the subscribers).
    #[arg(long, env = "BARE_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

fn main() {
    let args = Args::parse();
    let listener = match TcpListener::bind(&args.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchyard-bare: cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    switchyard_bench::bare::serve(listener, usize::from(args.threads));
}
