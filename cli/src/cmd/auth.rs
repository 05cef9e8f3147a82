//! Signing in and out, and the contexts of the config file.

use crate::config::Context;
use crate::failure::{CliResult, Failure};
use crate::output::{self, Table};
use crate::session::Session;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ferry login --host http://ferry-host:8000\n  \
    ferry login -u alice --context lab --host http://lab:8000\n  \
    printf '%s\\n' \"$PW\" | ferry login -u ci --password-stdin"
)]
pub struct LoginArgs {
    /// Account name (asked for when not given)
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from the first line of stdin instead of asking
    #[arg(long)]
    pub password_stdin: bool,
    /// Name of the API token created on the host (default: ferry-cli@<this machine>)
    #[arg(long)]
    pub token_name: Option<String>,
    /// Token lifetime in days (default: until revoked)
    #[arg(long)]
    pub expires_days: Option<u32>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ContextCmd {
    /// The contexts and which one is current
    List,
    /// Make a context the current one
    Use { name: String },
    /// Add or change a context's host (sign in with `ferry login --context NAME`)
    Set {
        name: String,
        #[arg(long = "host-url", value_name = "URL")]
        host_url: String,
    },
    /// Forget a context and its token (the token stays valid on the host: `ferry logout` revokes)
    Delete { name: String },
}

fn ask(prompt: &str) -> CliResult<String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn login(s: Session, a: LoginArgs) -> CliResult {
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin || !std::io::stdin().is_terminal() => {
            return Err(Failure::Usage(
                "give --username when the password does not come from a terminal".into(),
            ))
        }
        None => ask("Username: ")?,
    };
    let password = if a.password_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::Usage(format!("cannot read the password from stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(format!("Password for {username}: "))
            .map_err(|e| Failure::Usage(format!("cannot read the password: {e}")))?
    };
    let anon = s.client.anonymous();
    let signed = anon
        .login(&username, &password)
        .await
        .map_err(|e| s.fail(e))?;
    let session = anon.with_session(signed.session);
    let machine = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let name = a.token_name.unwrap_or(format!("ferry-cli@{machine}"));
    let mut body = json!({ "name": name });
    if let Some(d) = a.expires_days {
        body["expires_days"] = json!(d);
    }
    let created: Value = {
        let (status, v) = ferry_client::send_raw(
            session
                .raw(ferry_client::Method::POST, "/api/auth/tokens/create")
                .json(&body),
        )
        .await
        .map_err(|e| s.fail(e))?;
        if status != 200 {
            let detail = v.get("detail").map(output::show).unwrap_or_default();
            return Err(Failure::Failed(format!(
                "cannot create a token ({status}): {detail}"
            )));
        }
        v
    };
    // The session was only the way to the token.
    let _ = session.logout().await;
    let token = created["token"].as_str().unwrap_or_default().to_string();
    let mut config = s.config.clone();
    let ctx_name = context_for_login(&s);
    config.contexts.insert(
        ctx_name.clone(),
        Context {
            host: s.host().to_string(),
            token: Some(token),
            token_id: created["id"].as_i64(),
            username: Some(signed.reply.user.username.clone()),
        },
    );
    config.current_context = Some(ctx_name.clone());
    config
        .save(&s.config_path)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let out = json!({
        "context": ctx_name,
        "host": s.host(),
        "user": signed.reply.user,
        "token_name": created["name"],
        "config": s.config_path.display().to_string(),
    });
    s.show(&out, |_| {
        println!(
            "Signed in to {} as {} ({}); token '{}' stored in {} (context '{}').",
            s.host(),
            signed.reply.user.username,
            signed.reply.user.role,
            name,
            s.config_path.display(),
            ctx_name
        )
    });
    Ok(())
}

/// Where a sign-in is stored: the context named, else the current one when it is for this
/// host (or holds no token), else a new one named after the host, so signing in to a second
/// cluster never overwrites the first one's token.
fn context_for_login(s: &Session) -> String {
    if let Some(n) = &s.explicit_context {
        return n.clone();
    }
    let current = s.config.current_context.as_ref().and_then(|n| {
        s.config
            .contexts
            .get(n)
            .filter(|c| c.host == s.host() || c.token.is_none())
            .map(|_| n.clone())
    });
    if let Some(n) = current {
        return n;
    }
    if s.config.contexts.is_empty() {
        return "default".into();
    }
    let base = reqwest::Url::parse(s.host())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "cluster".into());
    if let Some((n, _)) = s.config.contexts.iter().find(|(_, c)| c.host == s.host()) {
        return n.clone();
    }
    let mut name = base.clone();
    let mut i = 2;
    while s.config.contexts.contains_key(&name) {
        name = format!("{base}-{i}");
        i += 1;
    }
    name
}

pub async fn logout(s: Session) -> CliResult {
    let Some(ctx_name) = s.target.context.clone() else {
        return Err(Failure::Usage(
            "no context is signed in (a token from FERRY_TOKEN or --token is revoked with `ferry token revoke`)".into(),
        ));
    };
    let mut config = s.config.clone();
    let Some(ctx) = config.contexts.get_mut(&ctx_name) else {
        return Err(Failure::Usage(format!("no context named '{ctx_name}'")));
    };
    let revoked = match ctx.token_id {
        Some(id) if ctx.token.is_some() => match s.client.revoke_token(id).await {
            Ok(_) => "revoked",
            // Already revoked or expired: nothing to do on the host.
            Err(e) if matches!(e.status(), Some(401 | 404)) => "already invalid",
            Err(e) => return Err(s.fail(e)),
        },
        _ => "forgotten",
    };
    ctx.token = None;
    ctx.token_id = None;
    config
        .save(&s.config_path)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let out = json!({"context": ctx_name, "token": revoked});
    s.show(&out, |_| {
        println!("Signed out of '{ctx_name}' (token {revoked}).")
    });
    Ok(())
}

pub async fn whoami(s: Session) -> CliResult {
    let me = s.get("/api/auth/me").await?;
    s.show(&me, |v| {
        if v["id"].as_i64() == Some(-1) {
            println!("not signed in at {} (run `ferry login`)", s.host());
        } else {
            println!(
                "{} ({}) at {}{}",
                output::cell(v, "username"),
                output::cell(v, "role"),
                s.host(),
                s.target
                    .context
                    .as_ref()
                    .map(|c| format!(", context '{c}'"))
                    .unwrap_or_default()
            );
        }
    });
    Ok(())
}

pub fn context(s: Session, c: ContextCmd) -> CliResult {
    let mut config = s.config.clone();
    match c {
        ContextCmd::List => {
            let list: Vec<Value> = config
                .contexts
                .iter()
                .map(|(name, ctx)| {
                    json!({
                        "name": name,
                        "current": config.current_context.as_deref() == Some(name),
                        "host": ctx.host,
                        "username": ctx.username,
                        "signed_in": ctx.token.is_some(),
                    })
                })
                .collect();
            s.show(&Value::Array(list.clone()), |_| {
                let mut t = Table::new(&["CURRENT", "NAME", "HOST", "USER", "SIGNED IN"]);
                for v in &list {
                    t.row(vec![
                        if v["current"] == true {
                            "*".into()
                        } else {
                            String::new()
                        },
                        output::cell(v, "name"),
                        output::cell(v, "host"),
                        output::cell(v, "username"),
                        if v["signed_in"] == true {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                    ]);
                }
                t.print();
            });
            return Ok(());
        }
        ContextCmd::Use { name } => {
            if !config.contexts.contains_key(&name) {
                return Err(Failure::NotFound(format!("no context named '{name}'")));
            }
            config.current_context = Some(name.clone());
            println!("Now using context '{name}'.");
        }
        ContextCmd::Set { name, host_url } => {
            ferry_client::Client::new(host_url.clone())
                .map_err(|e| Failure::Usage(format!("--host-url: {e}")))?;
            let ctx = config.contexts.entry(name.clone()).or_default();
            if ctx.host != host_url.trim_end_matches('/') {
                // A token is only ever sent to the host that issued it.
                ctx.token = None;
                ctx.token_id = None;
            }
            ctx.host = host_url.trim_end_matches('/').to_string();
            config.current_context.get_or_insert(name.clone());
            println!("Context '{name}' talks to {}.", ctx.host);
        }
        ContextCmd::Delete { name } => {
            if config.contexts.remove(&name).is_none() {
                return Err(Failure::NotFound(format!("no context named '{name}'")));
            }
            if config.current_context.as_deref() == Some(&name) {
                config.current_context = None;
            }
            println!("Context '{name}' deleted.");
        }
    }
    config
        .save(&s.config_path)
        .map_err(|e| Failure::Failed(e.to_string()))
}
