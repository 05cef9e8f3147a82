//! `ferry`, the command-line client of a Ferry cluster: `noun verb` commands over the host's
//! REST and `/ws` API, through the typed `ferry-client` crate.
//!
//! Rooms: `config` (contexts and where tokens live), `session` (what one run talks to),
//! `failure` (errors and exit codes), `output` (tables, JSON, YAML), `progress` (bars, off
//! when not on a terminal), `ws` (WebSockets to the host), `tty` (raw mode and window size),
//! `cmd/*` (one module per noun), `docs` (docs/cli.md from the real `--help`).

mod cmd;
mod config;
mod docs;
mod failure;
mod output;
mod progress;
mod session;
mod sse;
mod tty;
mod ws;

use clap::{CommandFactory, Parser, Subcommand};
use failure::Failure;

const EXAMPLES: &str = "\
Examples:
  ferry login --host http://ferry-host:8000
  ferry task submit --wait -- python train.py --epochs 3
  ferry task list --status running
  ferry task logs -f 7531058213185585152
  ferry vps create --ssh generate --key-file ./vpskey
  ferry ssh 7531058213185585152
  ferry -o json node list | jq '.[].hostname'";

/// The command-line client of a Ferry cluster.
///
/// Talks to ferry-host (the one API of the cluster). Where to and as whom: --host/--token,
/// else FERRY_HOST/FERRY_TOKEN, else the current context of ~/.config/ferry/config.toml
/// (`ferry login` writes it). Exit codes: 0 ok, 1 failed (with --wait: the task's own exit
/// code), 2 usage, 3 not found, 4 not signed in or not allowed, 5 host unreachable.
#[derive(Parser)]
#[command(name = "ferry", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: session::GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Sign in: ask for the password, create an API token and store it (0600)
    Login(cmd::auth::LoginArgs),
    /// Revoke the stored token and forget it
    Logout,
    /// Who the current credentials belong to
    Whoami,
    /// Named clusters in the config file
    #[command(subcommand)]
    Context(cmd::auth::ContextCmd),
    /// Command tasks: submit, list, follow, control
    #[command(subcommand)]
    Task(cmd::task::TaskCmd),
    /// VPS sessions and their snapshots
    #[command(subcommand)]
    Vps(cmd::vps::VpsCmd),
    /// SSH into a VPS through the host's relay (or be OpenSSH's ProxyCommand)
    Ssh(cmd::ssh::SshArgs),
    /// Print an OpenSSH config stanza that reaches a VPS through `ferry ssh --proxy`
    SshConfig(cmd::ssh::SshConfigArgs),
    /// An interactive terminal in a running task or VPS
    Connect(cmd::connect::ConnectArgs),
    /// Serve a port of a task's container on a local port
    Forward(cmd::forward::ForwardArgs),
    /// Copy a file into or out of a running task (`TASK:/path`)
    Cp(cmd::files::CpArgs),
    /// List a directory of a running task
    Ls(cmd::files::LsArgs),
    /// Print changes in a running task's directories as they happen
    Watch(cmd::files::WatchArgs),
    /// Compute nodes
    #[command(subcommand)]
    Node(cmd::node::NodeCmd),
    /// The last minute of node health, a sparkline per node
    Health(cmd::node::HealthArgs),
    /// Environments: containers prepared on the host and packaged for tasks
    #[command(subcommand)]
    Env(cmd::env::EnvCmd),
    /// Your API tokens
    #[command(subcommand)]
    Token(cmd::admin::TokenCmd),
    /// Accounts (operators and admins)
    #[command(subcommand)]
    User(cmd::admin::UserCmd),
    /// The security log (admins)
    Audit(cmd::admin::AuditArgs),
    /// Shell completions: `ferry completions bash > /etc/bash_completion.d/ferry`
    Completions { shell: clap_complete::Shell },
    /// Print docs/cli.md (every command's --help) to stdout
    #[command(hide = true)]
    Docs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(()) => failure::OK,
        Err(f) => {
            if !matches!(&f, Failure::Task { message, .. } if message.is_empty()) {
                // Host text may hold control characters; they must not drive the terminal.
                let text: String = f
                    .to_string()
                    .chars()
                    .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
                    .collect();
                eprintln!("error: {text}");
            }
            f.exit_code()
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> failure::CliResult {
    match cli.command {
        Command::Completions { shell } => {
            let mut c = Cli::command();
            clap_complete::generate(shell, &mut c, "ferry", &mut std::io::stdout());
            Ok(())
        }
        Command::Docs => {
            print!("{}", docs::markdown(&mut Cli::command()));
            Ok(())
        }
        command => {
            let s = session::Session::open(&cli.global, matches!(command, Command::Login(_)))?;
            dispatch(s, command).await
        }
    }
}

async fn dispatch(s: session::Session, command: Command) -> failure::CliResult {
    match command {
        Command::Login(a) => cmd::auth::login(s, a).await,
        Command::Logout => cmd::auth::logout(s).await,
        Command::Whoami => cmd::auth::whoami(s).await,
        Command::Context(c) => cmd::auth::context(s, c),
        Command::Task(c) => cmd::task::run(s, c).await,
        Command::Vps(c) => cmd::vps::run(s, c).await,
        Command::Ssh(a) => cmd::ssh::ssh(s, a).await,
        Command::SshConfig(a) => cmd::ssh::ssh_config(s, a),
        Command::Connect(a) => cmd::connect::run(s, a).await,
        Command::Forward(a) => cmd::forward::run(s, a).await,
        Command::Cp(a) => cmd::files::cp(s, a).await,
        Command::Ls(a) => cmd::files::ls(s, a).await,
        Command::Watch(a) => cmd::files::watch(s, a).await,
        Command::Node(c) => cmd::node::run(s, c).await,
        Command::Health(a) => cmd::node::health(s, a).await,
        Command::Env(c) => cmd::env::run(s, c).await,
        Command::Token(c) => cmd::admin::token(s, c).await,
        Command::User(c) => cmd::admin::user(s, c).await,
        Command::Audit(a) => cmd::admin::audit(s, a).await,
        Command::Completions { .. } | Command::Docs => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}
