//! `ferry vps ...`: VPS sessions, their assignees and snapshots.

use crate::failure::{CliResult, Failure};
use crate::output::{self, Table};
use crate::session::{task_id, Session};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum VpsCmd {
    /// Start a VPS and wait until it runs
    #[command(
        after_help = "Examples:\n  ferry vps create --ssh upload --key ~/.ssh/id_ed25519.pub\n  \
        ferry vps create --ssh generate --key-file ./vpskey -c 2 -m 4G\n  \
        ferry vps create --name scratch -t node-a --queue"
    )]
    Create(CreateArgs),
    /// List VPS sessions (active ones; --all for every one)
    List {
        /// Also stopped and failed ones
        #[arg(long)]
        all: bool,
        /// Only yours and those assigned to you
        #[arg(long)]
        mine: bool,
    },
    /// One VPS's record
    Status {
        #[arg(value_parser = task_id)]
        id: String,
    },
    /// Stop a VPS (its runner snapshots it first)
    Stop {
        #[arg(value_parser = task_id)]
        id: String,
    },
    /// Start a VPS again from its newest snapshot, on its node
    Restart {
        #[arg(value_parser = task_id)]
        id: String,
    },
    /// Let users reach a VPS (names or ids)
    Assign {
        #[arg(value_parser = task_id)]
        id: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Take a user's access away
    Unassign {
        #[arg(value_parser = task_id)]
        id: String,
        user: String,
    },
    /// Snapshots of a VPS
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Take a snapshot of a running VPS
    Create {
        #[arg(value_parser = task_id)]
        id: String,
        /// A note kept with it
        #[arg(long)]
        message: Option<String>,
    },
    /// A VPS's snapshots, newest first
    List {
        #[arg(value_parser = task_id)]
        id: String,
    },
    /// Delete one snapshot (by its timestamp), or all with --all
    Delete {
        #[arg(value_parser = task_id)]
        id: String,
        #[arg(required_unless_present = "all")]
        timestamp: Option<i64>,
        #[arg(long, conflicts_with = "timestamp")]
        all: bool,
    },
    /// Restart the VPS from a snapshot (the newest unless a timestamp is given)
    #[command(
        after_help = "A VPS restarts from its newest snapshot. To go back to an older one,\n\
        give its timestamp and --drop-newer: the snapshots taken after it are deleted first."
    )]
    Restore {
        #[arg(value_parser = task_id)]
        id: String,
        timestamp: Option<i64>,
        /// Delete the snapshots newer than TIMESTAMP so it becomes the newest
        #[arg(long, requires = "timestamp")]
        drop_newer: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(short = 'c', long, value_name = "N")]
    pub cores: Option<i64>,
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = super::memory)]
    pub memory: Option<i64>,
    /// NODE, NODE:NUMA, NODE::GPU,GPU (default: placed automatically)
    #[arg(short = 't', long, value_name = "TARGET")]
    pub target: Option<String>,
    #[arg(long, conflicts_with = "env")]
    pub image: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// How SSH gets in: disabled (terminal only), upload (your key), generate (a new key pair), none
    #[arg(long = "ssh", default_value = "disabled", value_name = "MODE")]
    pub ssh_mode: String,
    /// Public key file for --ssh upload (default ~/.ssh/id_ed25519.pub, then id_rsa.pub)
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Where --ssh generate saves the private key (0600); without it the key is printed
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Wait in the queue when no node has room now (else refused at once)
    #[arg(long)]
    pub queue: bool,
}

pub async fn run(s: Session, c: VpsCmd) -> CliResult {
    match c {
        VpsCmd::Create(a) => create(&s, a).await,
        VpsCmd::List { all, mine } => {
            let path = match (mine, all) {
                (true, _) => "/api/vps/my",
                (false, true) => "/api/vps",
                (false, false) => "/api/vps/status",
            };
            let v = s.get(path).await?;
            s.show(&v, |v| vps_table(v).print());
            Ok(())
        }
        VpsCmd::Status { id } => {
            let t = s.get(&format!("/api/status/{id}")).await?;
            s.show(&t, |t| print!("{}", super::task::describe(t)));
            Ok(())
        }
        VpsCmd::Stop { id } => {
            let v = s.post(&format!("/api/vps/stop/{id}"), None).await?;
            s.said(&v);
            Ok(())
        }
        VpsCmd::Restart { id } => restart(&s, &id).await,
        VpsCmd::Assign { id, users } => {
            let mut ids = Vec::new();
            for u in &users {
                ids.push(user_id(&s, u).await?);
            }
            let v = s
                .post(&format!("/api/vps/{id}/assign"), Some(&json!(ids)))
                .await?;
            s.said(&v);
            Ok(())
        }
        VpsCmd::Unassign { id, user } => {
            let uid = user_id(&s, &user).await?;
            let v = s.delete(&format!("/api/vps/{id}/assign/{uid}")).await?;
            s.said(&v);
            Ok(())
        }
        VpsCmd::Snapshot(c) => snapshot(&s, c).await,
    }
}

async fn restart(s: &Session, id: &str) -> CliResult {
    let bar = crate::progress::spinner(s.progress, &format!("restarting VPS {id}"));
    let v = s.post(&format!("/api/vps/restart/{id}"), None).await;
    bar.finish_and_clear();
    let v = v?;
    s.show(&v, |v| {
        println!("{}", output::cell(v, "message"));
        if let Some(p) = v["ssh_port"].as_u64().filter(|p| *p > 0) {
            println!("SSH port {p}: ferry ssh {id}");
        }
    });
    Ok(())
}

/// A user's id from a name or an id (names are looked up in `GET /api/auth/users`).
pub async fn user_id(s: &Session, who: &str) -> CliResult<i64> {
    if let Ok(n) = who.parse::<i64>() {
        return Ok(n);
    }
    let users = s.get("/api/auth/users").await?;
    users
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["username"].as_str() == Some(who))
        .and_then(|u| u["id"].as_i64())
        .ok_or_else(|| Failure::NotFound(format!("no user named '{who}'")))
}

fn default_public_key() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .find(|p| p.is_file())
}

async fn create(s: &Session, a: CreateArgs) -> CliResult {
    let mut body = json!({ "ssh_key_mode": a.ssh_mode, "queue": a.queue });
    for (k, v) in [
        ("name", json!(a.name)),
        ("required_cores", json!(a.cores)),
        ("required_memory_bytes", json!(a.memory)),
        ("registry_image", json!(a.image)),
        ("container_name", json!(a.env)),
    ] {
        if !v.is_null() {
            body[k] = v;
        }
    }
    if let Some(t) = &a.target {
        let (place, gpus) = super::task::parse_target(t).map_err(Failure::Usage)?;
        let (node, numa) = match place.split_once(':') {
            Some((n, m)) => (n.to_string(), m.parse::<i64>().ok()),
            None => (place.clone(), None),
        };
        body["target_hostname"] = json!(node);
        if let Some(m) = numa {
            body["target_numa_node_id"] = json!(m);
        }
        if let Some(g) = gpus {
            body["required_gpus"] = json!(g);
        }
    }
    if a.ssh_mode == "upload" {
        let path = a.key.clone().or_else(default_public_key).ok_or_else(|| {
            Failure::Usage("--ssh upload needs --key FILE (no ~/.ssh/id_*.pub found)".into())
        })?;
        let key = std::fs::read_to_string(&path)
            .map_err(|e| Failure::Usage(format!("--key {}: {e}", path.display())))?;
        body["ssh_public_key"] = json!(key.trim());
    }
    if let Some(p) = &a.key_file {
        if a.ssh_mode != "generate" {
            return Err(Failure::Usage("--key-file goes with --ssh generate".into()));
        }
        if p.exists() {
            return Err(Failure::Usage(format!(
                "--key-file {}: the file exists; not overwriting a key",
                p.display()
            )));
        }
    }
    // The key file is made before the VPS: the host shows a generated key only once.
    let mut key_file = match &a.key_file {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| Failure::Usage(format!("--key-file {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let bar = crate::progress::spinner(s.progress, "creating the VPS");
    let v = s.post("/api/vps/create", Some(&body)).await;
    bar.finish_and_clear();
    let mut v = match v {
        Ok(v) => v,
        Err(e) => {
            if let Some(p) = &a.key_file {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    let id = output::cell(&v, "task_id");
    if let (Some(p), Some(f), Some(key)) = (
        &a.key_file,
        key_file.as_mut(),
        v["ssh_private_key"].as_str(),
    ) {
        match f.write_all(key.as_bytes()).and_then(|_| f.sync_all()) {
            // The key is on disk now; scripts get its path, not the key.
            Ok(()) => v["ssh_private_key"] = json!(format!("saved to {}", p.display())),
            // Not lost: it is printed below instead.
            Err(e) => eprintln!(
                "cannot save the key to {}: {e}; here it is instead",
                p.display()
            ),
        }
    }
    s.show(&v, |v| {
        println!(
            "{} (VPS {id}, {})",
            output::cell(v, "message"),
            output::cell(v, "status")
        );
        if let Some(p) = v["ssh_port"].as_u64().filter(|p| *p > 0) {
            println!(
                "SSH port {p} on {}: ferry ssh {id}",
                output::cell(&v["assigned_node"], "hostname")
            );
        }
        if let Some(k) = v["ssh_private_key"].as_str() {
            if k.starts_with("saved to ") {
                println!("Private key {k}.");
            } else {
                println!("Private key (shown once; save it):\n{k}");
            }
        }
        if let Some(q) = v["queue_position"].as_u64() {
            println!("Queued at position {q}.");
        }
    });
    Ok(())
}

fn vps_table(v: &Value) -> Table {
    let mut t = Table::new(&[
        "ID", "NAME", "STATUS", "NODE", "CORES", "SSH PORT", "OWNER", "STARTED",
    ]);
    for x in v.as_array().into_iter().flatten() {
        t.row(vec![
            output::cell(x, "task_id"),
            output::cell(x, "name"),
            output::cell(x, "status"),
            output::cell(x, "assigned_node"),
            output::cell(x, "required_cores"),
            output::cell(x, "ssh_port"),
            output::cell(x, "owner_username"),
            super::task::short_time(&x["started_at"]),
        ]);
    }
    t
}

async fn snapshot(s: &Session, c: SnapshotCmd) -> CliResult {
    match c {
        SnapshotCmd::Create { id, message } => {
            let mut path = format!("/api/vps/snapshots/{id}");
            if let Some(m) = message {
                let q = serde_urlencoded::to_string([("message", m)])
                    .map_err(|e| Failure::Usage(e.to_string()))?;
                path = format!("{path}?{q}");
            }
            let bar = crate::progress::spinner(s.progress, "taking the snapshot");
            let v = s.post(&path, None).await;
            bar.finish_and_clear();
            let v = v?;
            s.show(&v, |v| {
                println!(
                    "{} ({})",
                    output::cell(v, "message"),
                    output::cell(v, "tag")
                )
            });
            Ok(())
        }
        SnapshotCmd::List { id } => {
            let v = s.get(&format!("/api/vps/snapshots/{id}")).await?;
            s.show(&v, |v| {
                let mut t = Table::new(&["TIMESTAMP", "CREATED", "SIZE", "TAG"]);
                for x in v["snapshots"].as_array().into_iter().flatten() {
                    t.row(vec![
                        output::cell(x, "timestamp"),
                        output::cell(x, "created_at"),
                        x["size"]
                            .as_u64()
                            .map(output::bytes)
                            .unwrap_or_else(|| output::cell(x, "size")),
                        output::cell(x, "tag"),
                    ]);
                }
                t.print();
            });
            Ok(())
        }
        SnapshotCmd::Delete { id, timestamp, all } => {
            let path = match (all, timestamp) {
                (true, _) => format!("/api/vps/snapshots/{id}"),
                (false, Some(ts)) => format!("/api/vps/snapshots/{id}/{ts}"),
                (false, None) => return Err(Failure::Usage("give a TIMESTAMP or --all".into())),
            };
            let v = s.delete(&path).await?;
            s.said(&v);
            Ok(())
        }
        SnapshotCmd::Restore {
            id,
            timestamp,
            drop_newer,
        } => {
            if let Some(ts) = timestamp {
                // A running VPS is snapshotted again when it stops for the restart, and that
                // newest snapshot would win: going back needs it stopped first.
                let t = s.get(&format!("/api/status/{id}")).await?;
                if matches!(
                    t["status"].as_str(),
                    Some("running" | "paused" | "assigning" | "pending")
                ) {
                    return Err(Failure::Usage(format!(
                        "VPS {id} is {}: stop it first (`ferry vps stop {id}`), then restore",
                        output::cell(&t, "status")
                    )));
                }
                let v = s.get(&format!("/api/vps/snapshots/{id}")).await?;
                let stamps: Vec<i64> = v["snapshots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["timestamp"].as_i64())
                    .collect();
                if !stamps.contains(&ts) {
                    return Err(Failure::NotFound(format!("VPS {id} has no snapshot {ts}")));
                }
                let newer: Vec<i64> = stamps.into_iter().filter(|t| *t > ts).collect();
                if !newer.is_empty() && !drop_newer {
                    return Err(Failure::Usage(format!(
                        "a VPS restarts from its newest snapshot; {} newer than {ts} exist: add --drop-newer to delete them first",
                        newer.len()
                    )));
                }
                for t in newer {
                    s.delete(&format!("/api/vps/snapshots/{id}/{t}")).await?;
                    if s.format == output::Format::Table {
                        println!("Deleted snapshot {t}.");
                    }
                }
            }
            restart(s, &id).await
        }
    }
}
