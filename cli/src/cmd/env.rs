//! `ferry env ...`: environments (operators): containers prepared on the host, packaged into
//! versioned tarballs that tasks run in.

use crate::failure::{CliResult, Failure};
use crate::output::{self, Table};
use crate::session::Session;
use serde_json::json;
use std::time::Duration;

#[derive(clap::Subcommand, Debug)]
pub enum EnvCmd {
    /// Make an environment container on the host from an image
    #[command(after_help = "Then: ferry env shell NAME (install things), ferry env package NAME.")]
    Create {
        name: String,
        /// The image to start from (local to the host, or pullable)
        #[arg(long)]
        image: String,
    },
    /// Environments: their containers and packaged versions
    List,
    /// Package an environment (commit and save); waits and shows progress
    Package {
        name: String,
        /// Return once packaging has started
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an environment's packaged versions (and with --container its container)
    Delete {
        name: String,
        #[arg(long)]
        container: bool,
    },
    /// A shell in an environment's container
    Shell { name: String },
    /// Start a stopped environment container
    Start { name: String },
    /// Stop an environment container
    Stop { name: String },
}

pub async fn run(s: Session, c: EnvCmd) -> CliResult {
    match c {
        EnvCmd::Create { name, image } => {
            let v = s
                .post(
                    "/api/docker/host/create",
                    Some(&json!({"image_name": image, "container_name": name})),
                )
                .await?;
            s.said(&v);
            Ok(())
        }
        EnvCmd::List => list(&s).await,
        EnvCmd::Package { name, no_wait } => package(&s, &name, no_wait).await,
        EnvCmd::Delete { name, container } => {
            let mut replies = Vec::new();
            match s.delete(&format!("/api/docker/container/{name}")).await {
                Ok(v) => replies.push(v),
                // Nothing packaged yet is fine when the container is what goes.
                Err(Failure::NotFound(_)) if container => {}
                Err(e) => return Err(e),
            }
            if container {
                replies.push(
                    s.post(&format!("/api/docker/host/delete/{name}"), None)
                        .await?,
                );
            }
            for v in &replies {
                s.said(v);
            }
            Ok(())
        }
        EnvCmd::Shell { name } => {
            super::connect::terminal(&s, &format!("/ws/docker/host/containers/{name}/terminal"))
                .await
        }
        EnvCmd::Start { name } => {
            let v = s
                .post(&format!("/api/docker/host/start/{name}"), None)
                .await?;
            s.said(&v);
            Ok(())
        }
        EnvCmd::Stop { name } => {
            let v = s
                .post(&format!("/api/docker/host/stop/{name}"), None)
                .await?;
            s.said(&v);
            Ok(())
        }
    }
}

async fn list(s: &Session) -> CliResult {
    let packaged = s.get("/api/docker/list").await?;
    let containers = s.get("/api/docker/host/containers").await?;
    let mut names: std::collections::BTreeSet<String> = Default::default();
    if let Some(m) = packaged.as_object() {
        names.extend(m.keys().cloned());
    }
    for c in containers.as_array().into_iter().flatten() {
        if let Some(n) = c["env_name"].as_str() {
            names.insert(n.to_string());
        }
    }
    let all = json!({"packaged": packaged, "containers": containers});
    s.show(&all, |_| {
        let mut t = Table::new(&[
            "ENVIRONMENT",
            "CONTAINER",
            "IMAGE",
            "VERSIONS",
            "LATEST",
            "SIZE",
        ]);
        for n in &names {
            let c = containers
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["env_name"].as_str() == Some(n));
            let p = &packaged[n];
            let versions = p["all_versions"].as_array().map(Vec::len).unwrap_or(0);
            let size = p["all_versions"]
                .as_array()
                .and_then(|v| v.first())
                .and_then(|v| v["size_bytes"].as_u64())
                .map(output::bytes)
                .unwrap_or("-".into());
            t.row(vec![
                n.clone(),
                c.map(|c| output::cell(c, "status")).unwrap_or("-".into()),
                c.map(|c| output::cell(c, "image")).unwrap_or("-".into()),
                versions.to_string(),
                output::cell(p, "latest_timestamp"),
                size,
            ]);
        }
        t.print();
    });
    Ok(())
}

async fn package(s: &Session, name: &str, no_wait: bool) -> CliResult {
    let started = s
        .post(&format!("/api/docker/create_tar/{name}"), None)
        .await?;
    if no_wait {
        s.said(&started);
        return Ok(());
    }
    let bar = crate::progress::bytes(s.progress, None, &format!("packaging {name}"));
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = s.get(&format!("/api/docker/env/{name}")).await?;
        let p = &v["packaging"];
        let state = p["state"].as_str().unwrap_or("");
        bar.set_message(format!("packaging {name}: {state}"));
        if let Some(b) = p["bytes_written"].as_u64() {
            bar.set_position(b);
        }
        match state {
            "done" => {
                bar.finish_and_clear();
                s.show(&v, |v| {
                    println!(
                        "Packaged {name}: {} ({})",
                        output::cell(p, "tarball"),
                        v["versions"]
                            .as_array()
                            .and_then(|l| l.first())
                            .and_then(|x| x["size_bytes"].as_u64())
                            .map(output::bytes)
                            .unwrap_or("-".into())
                    )
                });
                return Ok(());
            }
            "failed" => {
                bar.finish_and_clear();
                return Err(Failure::Failed(format!(
                    "packaging {name} failed: {}",
                    output::cell(p, "error")
                )));
            }
            _ => {}
        }
    }
}
