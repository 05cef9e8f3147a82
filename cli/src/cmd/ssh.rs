//! `ferry ssh` and `ferry ssh-config`: OpenSSH to a VPS through the host's SSH relay
//! (`REQUEST_TUNNEL <id>`), with `ferry ssh --proxy` as OpenSSH's ProxyCommand.

use crate::failure::{CliResult, Failure};
use crate::session::{task_id, Session};
use std::os::unix::process::CommandExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The relay's port when the host has not been told otherwise (`ssh_relay_listen`).
const DEFAULT_RELAY_PORT: u16 = 8002;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  ferry ssh 7531058213185585152\n  \
    ferry ssh -i ./vpskey 7531058213185585152 -- uname -a\n  \
    ssh -o ProxyCommand='ferry ssh --proxy %h' root@7531058213185585152")]
pub struct SshArgs {
    /// The VPS (its task id)
    #[arg(value_parser = task_id)]
    pub id: String,
    /// Be OpenSSH's ProxyCommand: carry the SSH stream over stdin/stdout
    #[arg(long)]
    pub proxy: bool,
    #[command(flatten)]
    pub via: Via,
    /// An OpenSSH option passed on as -o, e.g. UserKnownHostsFile=./known_hosts; repeatable
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub options: Vec<String>,
    /// A command to run instead of a login shell
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct SshConfigArgs {
    #[arg(value_parser = task_id)]
    pub id: String,
    #[command(flatten)]
    pub via: Via,
}

/// How to reach the VPS: the relay, the login, the key.
#[derive(clap::Args, Debug)]
pub struct Via {
    /// The host's SSH relay, HOST:PORT (default: the host's address, port 8002)
    #[arg(
        long,
        env = "FERRY_SSH_RELAY",
        hide_env_values = true,
        value_name = "HOST:PORT"
    )]
    pub relay: Option<String>,
    /// The user to log in as
    #[arg(short = 'l', long, default_value = "root")]
    pub user: String,
    /// A private key file (passed to ssh -i)
    #[arg(short = 'i', long, value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
}

fn relay_of(s: &Session, relay: &Option<String>) -> CliResult<String> {
    if let Some(r) = relay {
        return Ok(r.clone());
    }
    let url =
        reqwest::Url::parse(s.host()).map_err(|e| Failure::Usage(format!("{}: {e}", s.host())))?;
    let host = url
        .host_str()
        .ok_or_else(|| Failure::Usage(format!("{}: no host name", s.host())))?;
    Ok(format!("{host}:{DEFAULT_RELAY_PORT}"))
}

fn me() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "ferry".into())
}

/// What goes into `ProxyCommand`; the pieces are quoted for the shell ssh runs it with.
fn proxy_command(relay: &str, id: &str) -> String {
    format!(
        "{} ssh --proxy --relay {} {id}",
        shell_quote(&me()),
        shell_quote(relay)
    )
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-:@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub async fn ssh(s: Session, a: SshArgs) -> CliResult {
    let relay = relay_of(&s, &a.via.relay)?;
    if a.proxy {
        return proxy(&relay, &a.id).await;
    }
    let mut cmd = std::process::Command::new("ssh");
    // OpenSSH keeps the first value of an option: the user's come first.
    for o in &a.options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("-o")
        .arg(format!("ProxyCommand={}", proxy_command(&relay, &a.id)))
        // A VPS's host key is its own, not the relay's: keep it under a name of its own.
        .arg("-o")
        .arg(format!("HostKeyAlias=ferry-vps-{}", a.id))
        .arg("-o")
        .arg("StrictHostKeyChecking=accept-new");
    if let Some(i) = &a.via.identity {
        cmd.arg("-i").arg(i);
    }
    cmd.arg(format!("{}@vps-{}", a.via.user, a.id));
    if !a.command.is_empty() {
        cmd.arg("--").args(&a.command);
    }
    let e = cmd.exec();
    Err(Failure::Failed(format!(
        "cannot run ssh: {e} (is OpenSSH's client installed?)"
    )))
}

pub fn ssh_config(_s: Session, a: SshConfigArgs) -> CliResult {
    let relay = relay_of(&_s, &a.via.relay)?;
    println!("Host ferry-{}", a.id);
    println!("    HostName vps-{}", a.id);
    println!("    User {}", a.via.user);
    println!("    HostKeyAlias ferry-vps-{}", a.id);
    println!("    ProxyCommand {}", proxy_command(&relay, &a.id));
    if let Some(i) = &a.via.identity {
        println!("    IdentityFile {}", i.display());
    }
    Ok(())
}

/// Asks the relay for the VPS, then splices stdin/stdout to it until either side ends.
async fn proxy(relay: &str, id: &str) -> CliResult {
    let stream = tokio::net::TcpStream::connect(relay)
        .await
        .map_err(|e| Failure::Unreachable {
            host: format!("the SSH relay {relay}"),
            reason: e.to_string(),
        })?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("REQUEST_TUNNEL {id}\n").as_bytes())
        .await
        .map_err(|e| Failure::Failed(format!("relay {relay}: {e}")))?;
    let mut r = BufReader::new(r);
    let mut answer = String::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), r.read_line(&mut answer))
        .await
        .map_err(|_| Failure::Failed(format!("relay {relay} did not answer in 30 s")))?;
    read.map_err(|e| Failure::Failed(format!("relay {relay}: {e}")))?;
    let answer = answer.trim_end();
    if answer != "SUCCESS" {
        let why = answer.strip_prefix("ERROR ").unwrap_or(answer);
        return Err(if why.contains("not found") {
            Failure::NotFound(why.to_string())
        } else {
            Failure::Failed(format!("relay: {why}"))
        });
    }
    // stdin may end first (a half-close) while the VPS still talks: the session is over
    // when the VPS side closes.
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
        let _ = w.shutdown().await;
    });
    let _ = tokio::io::copy(&mut r, &mut tokio::io::stdout()).await;
    up.abort();
    Ok(())
}
