//! `ferry token ...`, `ferry user ...`, `ferry audit`: API tokens, accounts, the security log.

use crate::failure::CliResult;
use crate::output::{self, Table};
use crate::session::Session;
use serde_json::json;

#[derive(clap::Subcommand, Debug)]
pub enum TokenCmd {
    /// Make an API token (shown once) for scripts and other machines
    Create {
        name: String,
        /// Lifetime in days (default: until revoked)
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// Your tokens
    List,
    /// Revoke a token by its id
    Revoke { id: i64 },
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCmd {
    /// Every account (operators and admins)
    List,
    /// Make an invitation code someone registers with
    Invite {
        /// viewer, user, operator or admin
        #[arg(long, default_value = "user")]
        role: String,
        /// How many accounts it may make
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// Hours it stays valid
        #[arg(long, default_value_t = 72)]
        hours: i64,
    },
    /// Change an account's role (admins)
    SetRole {
        /// Name or id
        user: String,
        role: String,
    },
    /// Disable an account: it can no longer sign in or use its tokens (admins)
    Disable { user: String },
    /// Enable a disabled account (admins)
    Enable { user: String },
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
}

pub async fn token(s: Session, c: TokenCmd) -> CliResult {
    match c {
        TokenCmd::Create { name, expires_days } => {
            let mut body = json!({ "name": name });
            if let Some(d) = expires_days {
                body["expires_days"] = json!(d);
            }
            let v = s.post("/api/auth/tokens/create", Some(&body)).await?;
            s.show(&v, |v| {
                eprintln!(
                    "Token '{}' (id {}); it is shown only now:",
                    output::cell(v, "name"),
                    output::cell(v, "id")
                );
                println!("{}", output::cell(v, "token"));
            });
        }
        TokenCmd::List => {
            let v = s.get("/api/auth/tokens").await?;
            s.show(&v, |v| {
                let mut t = Table::new(&["ID", "NAME", "CREATED", "LAST USED", "EXPIRES"]);
                for x in v.as_array().into_iter().flatten() {
                    t.row(vec![
                        output::cell(x, "id"),
                        output::cell(x, "name"),
                        super::task::short_time(&x["created_at"]),
                        super::task::short_time(&x["last_used"]),
                        super::task::short_time(&x["expires_at"]),
                    ]);
                }
                t.print();
            });
        }
        TokenCmd::Revoke { id } => {
            let v = s.delete(&format!("/api/auth/tokens/{id}")).await?;
            s.said(&v);
        }
    }
    Ok(())
}

pub async fn user(s: Session, c: UserCmd) -> CliResult {
    match c {
        UserCmd::List => {
            let v = s.get("/api/auth/users").await?;
            s.show(&v, |v| {
                let mut t = Table::new(&["ID", "USERNAME", "ROLE", "ACTIVE", "CREATED"]);
                for x in v.as_array().into_iter().flatten() {
                    t.row(vec![
                        output::cell(x, "id"),
                        output::cell(x, "username"),
                        output::cell(x, "role"),
                        output::cell(x, "is_active"),
                        super::task::short_time(&x["created_at"]),
                    ]);
                }
                t.print();
            });
        }
        UserCmd::Invite { role, uses, hours } => {
            let body = json!({"role": role, "max_usage": uses, "expires_hours": hours});
            let v = s.post("/api/auth/invitations", Some(&body)).await?;
            s.show(&v, |v| {
                eprintln!(
                    "Invitation for a {} ({} use(s), until {}); register with `--invitation` or ?token=:",
                    output::cell(v, "role"),
                    output::cell(v, "max_usage"),
                    output::cell(v, "expires_at")
                );
                println!("{}", output::cell(v, "token"));
            });
        }
        UserCmd::SetRole { user, role } => patch(&s, &user, json!({ "role": role })).await?,
        UserCmd::Disable { user } => patch(&s, &user, json!({ "is_active": false })).await?,
        UserCmd::Enable { user } => patch(&s, &user, json!({ "is_active": true })).await?,
    }
    Ok(())
}

async fn patch(s: &Session, who: &str, body: serde_json::Value) -> CliResult {
    let id = super::vps::user_id(s, who).await?;
    let v = s
        .call(
            ferry_client::Method::PATCH,
            &format!("/api/auth/users/{id}"),
            Some(&body),
        )
        .await?;
    s.show(&v, |v| {
        println!(
            "{}: role {}, {}",
            output::cell(v, "username"),
            output::cell(v, "role"),
            if v["is_active"] == true {
                "active"
            } else {
                "disabled"
            }
        )
    });
    Ok(())
}

pub async fn audit(s: Session, a: AuditArgs) -> CliResult {
    let v = s
        .get_query("/api/audit", &[("limit", a.limit), ("offset", a.offset)])
        .await?;
    s.show(&v, |v| {
        let mut t = Table::new(&["TIME", "ACTOR", "ACTION", "TARGET", "ADDRESS", "DETAIL"]);
        for x in v["items"].as_array().into_iter().flatten() {
            t.row(vec![
                super::task::short_time(&x["at"]),
                output::cell(x, "actor"),
                output::cell(x, "action"),
                output::cell(x, "target"),
                output::cell(x, "address"),
                output::cell(x, "detail"),
            ]);
        }
        t.print();
        println!(
            "({} of {} entries)",
            v["items"].as_array().map(Vec::len).unwrap_or(0),
            output::cell(v, "total")
        );
    });
    Ok(())
}
