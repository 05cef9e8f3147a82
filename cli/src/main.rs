//! `ferry`, the command-line client. A placeholder until the CLI issue: it prints what it will
//! do and how to reach the API meanwhile.

use clap::Parser;

/// Ferry's command-line client (coming soon). Until then, use the REST API with curl:
/// see docs/api.md.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!("The ferry CLI is not available yet. Use the REST API meanwhile, e.g.:");
    println!("  curl -X POST http://HOST:8000/api/submit -H 'content-type: application/json' \\");
    println!("       -d '{{\"command\":\"echo\",\"arguments\":[\"hello\"]}}'");
    println!("See docs/api.md for every endpoint.");
}
