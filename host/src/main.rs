use clap::Parser;
use ferry_host::config::HostArgs;

fn main() -> std::process::ExitCode {
    let args = HostArgs::parse();
    let print = args.print_config;
    ferry_common::daemon::main("ferry-host", args.resolve(), print, ferry_host::run)
}
