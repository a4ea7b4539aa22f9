//! The `gpufn` command.

use clap::Parser;

/// gpufn: serverless GPU functions.
#[derive(Parser)]
#[command(name = "gpufn", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
