//! The `switchyard-bench` binary: parses the command line, runs one scenario, prints the
//! summary and writes the JSON report.

use std::io::Write as _;

use clap::Parser;
use switchyard_bench::{Args, run, run_child};

fn main() {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard-bench: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if args.child {
        if let Err(e) = runtime.block_on(run_child(args)) {
            eprintln!("switchyard-bench child: {e}");
            std::process::exit(1);
        }
        return;
    }
    let json = args.json.clone();
    let report = match runtime.block_on(run(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard-bench: {e}");
            std::process::exit(1);
        }
    };
    // Subscribers that are still closing must not delay the exit.
    runtime.shutdown_background();
    let to_stdout = json.as_deref() == Some(std::path::Path::new("-"));
    if !to_stdout {
        print!("{}", report.summary());
    }
    if let Some(path) = json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("switchyard-bench: cannot encode the report: {e}");
                std::process::exit(1);
            }
        };
        let written = if to_stdout {
            writeln!(std::io::stdout(), "{text}")
        } else {
            std::fs::write(&path, text + "\n")
        };
        if let Err(e) = written {
            eprintln!("switchyard-bench: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
