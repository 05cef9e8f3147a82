//! `ferry cp`, `ferry ls`, `ferry watch`: files of a running task through the host's file
//! routes (`/api/fs/{id}/...`) and `/ws/fs/{id}/watch`.

use crate::failure::{CliResult, Failure};
use crate::output::{self, Table};
use crate::session::Session;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio_tungstenite::tungstenite::Message;

/// The host's limits: a read returns at most 10 MiB, a write takes at most 50 MiB.
const MAX_READ: u64 = 10 << 20;
const MAX_WRITE: u64 = 50 << 20;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "One side is TASK:/path (a running task's file), the other a local path.\n\n\
    Examples:\n  ferry cp 7531058213185585152:/shared/out.bin ./out.bin\n  \
    ferry cp ./data.tar 7531058213185585152:/local_temp/data.tar\n  \
    ferry cp 7531058213185585152:/etc/hostname -     # to stdout"
)]
pub struct CpArgs {
    pub source: String,
    pub destination: String,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// TASK or TASK:/path (default /)
    pub target: String,
    /// Also names starting with a dot
    #[arg(short = 'a', long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The task (its id)
    #[arg(value_parser = crate::session::task_id)]
    pub id: String,
    /// Directories to watch (default /shared,/local_temp)
    #[arg(value_delimiter = ',')]
    pub paths: Vec<String>,
}

/// `TASK:/path` into its two halves; `None` for a local path.
fn remote(s: &str) -> Option<(String, String)> {
    let (id, path) = s.split_once(':')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || !path.starts_with('/') {
        return None;
    }
    Some((id.to_string(), path.to_string()))
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

pub async fn cp(s: Session, a: CpArgs) -> CliResult {
    match (remote(&a.source), remote(&a.destination)) {
        (Some((id, path)), None) => download(&s, &id, &path, &a.destination).await,
        (None, Some((id, path))) => upload(&s, &a.source, &id, &path).await,
        (Some(_), Some(_)) => Err(Failure::Usage(
            "both sides are in tasks: copy through a local file".into(),
        )),
        (None, None) => Err(Failure::Usage(
            "one side must be TASK:/path (the task's id, a colon, an absolute path)".into(),
        )),
    }
}

async fn download(s: &Session, id: &str, path: &str, dest: &str) -> CliResult {
    let stat = s
        .get(&format!("/api/fs/{id}/stat?{}", query(&[("path", path)])))
        .await?;
    if stat["type"].as_str() != Some("file") {
        return Err(Failure::Usage(format!(
            "{path} is a {}, not a file",
            output::cell(&stat, "type")
        )));
    }
    let size = stat["size"].as_u64().unwrap_or(0);
    if size > MAX_READ {
        return Err(Failure::Failed(format!(
            "{path} is {} and the host reads files of at most {} this way; put it in the task's shared dir instead",
            output::bytes(size),
            output::bytes(MAX_READ)
        )));
    }
    let bar = crate::progress::bytes(s.progress && dest != "-", Some(size), path);
    let limit = MAX_READ.to_string();
    let v = s
        .get(&format!(
            "/api/fs/{id}/read?{}",
            query(&[("path", path), ("encoding", "base64"), ("limit", &limit)])
        ))
        .await?;
    let content = v["content"].as_str().unwrap_or("");
    let bytes = match v["encoding"].as_str() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|e| Failure::Failed(format!("the host sent bad base64: {e}")))?,
        _ => content.as_bytes().to_vec(),
    };
    if v["truncated"] == true {
        return Err(Failure::Failed(format!(
            "{path} grew while it was read; try again"
        )));
    }
    bar.set_position(bytes.len() as u64);
    if dest == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)
            .and_then(|_| out.flush())
            .map_err(|e| Failure::Failed(format!("stdout: {e}")))?;
        return Ok(());
    }
    let mut target = PathBuf::from(dest);
    if target.is_dir() {
        let name = Path::new(path)
            .file_name()
            .ok_or_else(|| Failure::Usage(format!("{path} has no file name")))?;
        target.push(name);
    }
    // Written beside the target and renamed, so an interrupted copy leaves no half file.
    let tmp = target.with_file_name(format!(
        ".{}.ferry-cp",
        target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, &target))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::Failed(format!("cannot write {}: {e}", target.display()))
        })?;
    bar.finish_and_clear();
    let out = json!({"task_id": id, "source": path, "destination": target.display().to_string(), "bytes": bytes.len()});
    s.show(&out, |_| {
        println!(
            "{id}:{path} -> {} ({})",
            target.display(),
            output::bytes(bytes.len() as u64)
        )
    });
    Ok(())
}

async fn upload(s: &Session, src: &str, id: &str, path: &str) -> CliResult {
    let meta = std::fs::metadata(src).map_err(|e| Failure::Usage(format!("{src}: {e}")))?;
    if !meta.is_file() {
        return Err(Failure::Usage(format!("{src} is not a file")));
    }
    if meta.len() > MAX_WRITE {
        return Err(Failure::Failed(format!(
            "{src} is {}; the host takes files of at most {} this way",
            output::bytes(meta.len()),
            output::bytes(MAX_WRITE)
        )));
    }
    let bytes = std::fs::read(src).map_err(|e| Failure::Usage(format!("{src}: {e}")))?;
    // A directory as the destination: the file goes into it under its own name.
    let mut dest = path.to_string();
    if dest.ends_with('/') {
        let name = Path::new(src)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        dest.push_str(&name);
    }
    let bar = crate::progress::bytes(s.progress, Some(bytes.len() as u64), src);
    let body = json!({
        "path": dest,
        "content": base64::engine::general_purpose::STANDARD.encode(&bytes),
        "encoding": "base64",
        "create_parents": true,
    });
    let v = s.post(&format!("/api/fs/{id}/write"), Some(&body)).await;
    bar.finish_and_clear();
    let v = v?;
    s.show(&v, |v| {
        println!(
            "{src} -> {id}:{} ({})",
            output::cell(v, "path"),
            output::bytes(bytes.len() as u64)
        )
    });
    Ok(())
}

pub async fn ls(s: Session, a: LsArgs) -> CliResult {
    let (id, path) = match remote(&a.target) {
        Some(x) => x,
        None if a.target.bytes().all(|b| b.is_ascii_digit()) && !a.target.is_empty() => {
            (a.target.clone(), "/".to_string())
        }
        None => {
            return Err(Failure::Usage(format!(
                "'{}' is not TASK or TASK:/path",
                a.target
            )))
        }
    };
    let hidden = if a.all { "true" } else { "false" };
    let v = s
        .get(&format!(
            "/api/fs/{id}/list?{}",
            query(&[("path", &path), ("show_hidden", hidden)])
        ))
        .await?;
    s.show(&v, |v| {
        let mut t = Table::new(&["MODE", "SIZE", "MODIFIED", "NAME"]);
        for e in v["entries"].as_array().into_iter().flatten() {
            let kind = match e["type"].as_str() {
                Some("directory") => "d",
                Some("symlink") => "l",
                Some("file") => "-",
                _ => "?",
            };
            let mut name = output::cell(e, "name");
            if kind == "d" {
                name.push('/');
            }
            t.row(vec![
                format!("{kind}{}", output::cell(e, "permissions")),
                match e["size"].as_i64() {
                    Some(n) if n >= 0 => n.to_string(),
                    _ => "-".into(),
                },
                super::task::short_time(&e["mtime"]),
                name,
            ]);
        }
        t.print();
        if v["truncated"] == true {
            eprintln!("(only the first 1000 entries)");
        }
    });
    Ok(())
}

pub async fn watch(s: Session, a: WatchArgs) -> CliResult {
    let mut path = format!("/ws/fs/{}/watch", a.id);
    if !a.paths.is_empty() {
        path = format!("{path}?{}", query(&[("paths", &a.paths.join(","))]));
    }
    let socket = crate::ws::connect(&s, &path).await?;
    let (_tx, mut rx) = socket.split();
    let mut out = std::io::stdout();
    while let Some(msg) = rx.next().await {
        let m = msg.map_err(|e| Failure::Failed(format!("watch connection broke: {e}")))?;
        let Message::Text(t) = m else {
            if let Message::Close(f) = m {
                if let Some(f) = f.filter(|f| !f.reason.is_empty()) {
                    return Err(Failure::Failed(f.reason.to_string()));
                }
                return Ok(());
            }
            continue;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
        if s.format != output::Format::Table {
            let _ = writeln!(out, "{}", v);
        } else {
            match v["type"].as_str() {
                Some("watching") => eprintln!(
                    "watching {} ({})",
                    output::cell(&v, "paths"),
                    output::cell(&v, "method")
                ),
                Some("change") => {
                    let line = format!(
                        "{:<7} {}{}",
                        output::cell(&v, "event"),
                        output::cell(&v, "path"),
                        if v["is_dir"] == true { "/" } else { "" }
                    );
                    let _ = writeln!(
                        out,
                        "{}",
                        line.chars()
                            .map(|c| if c.is_control() { '?' } else { c })
                            .collect::<String>()
                    );
                }
                Some("error") => eprintln!("watch: {}", output::cell(&v, "message")),
                _ => {}
            }
        }
        let _ = out.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_need_a_task_id_and_an_absolute_path() {
        assert_eq!(remote("12:/a/b"), Some(("12".into(), "/a/b".into())));
        assert_eq!(remote("./x"), None);
        assert_eq!(remote("c:/x"), None);
        assert_eq!(remote("12:rel"), None);
    }
}
