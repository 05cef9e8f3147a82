use clap::Parser;
use ferry_runner::config::RunnerArgs;

fn main() -> std::process::ExitCode {
    let args = RunnerArgs::parse();
    let print = args.print_config;
    ferry_common::daemon::main("ferry-runner", args.resolve(), print, ferry_runner::run)
}
