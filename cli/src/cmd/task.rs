//! `ferry task ...`: command tasks.

use crate::failure::{CliResult, Failure};
use crate::output::{self, Table};
use crate::session::{task_id, Session};
use crate::sse::Events;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;

#[derive(clap::Subcommand, Debug)]
pub enum TaskCmd {
    /// Submit a command (everything after `--`) as one task, or one per --target
    #[command(after_help = "Examples:\n  ferry task submit -- echo hello\n  \
        ferry task submit -c 4 -m 8G --timeout 2h --retries 2 --wait -- python train.py\n  \
        ferry task submit -t node-a:0 -t node-b::0,1 --env pytorch -- ./run.sh\n  \
        ferry task submit --follow -- sh -c 'for i in 1 2 3; do echo $i; sleep 1; done'")]
    Submit(SubmitArgs),
    /// List tasks, newest first
    #[command(after_help = "Examples:\n  ferry task list --status running\n  \
        ferry task list --node node-a --limit 20\n  ferry task list --watch")]
    List(ListArgs),
    /// One task's record
    Status {
        #[arg(value_parser = task_id)]
        id: String,
    },
    /// A task's output; -f follows it until the task ends
    #[command(after_help = "Examples:\n  ferry task logs 7531058213185585152\n  \
        ferry task logs -f --lines 20 7531058213185585152\n  \
        ferry task logs --stderr --attempt 1 7531058213185585152")]
    Logs(LogsArgs),
    /// A task's timeline: every transition with time, node, attempt and reason
    Events {
        #[arg(value_parser = task_id)]
        id: String,
    },
    /// Every attempt of a retried task, with its exit code
    Attempts {
        #[arg(value_parser = task_id)]
        id: String,
    },
    /// Kill tasks (queued ones just leave the queue)
    Kill(Ids),
    /// Pause running tasks
    Pause(Ids),
    /// Resume paused tasks
    Resume(Ids),
    /// Run ended tasks again as a new attempt
    Retry(Ids),
    /// Approve tasks waiting for an operator
    Approve(Ids),
    /// Reject tasks waiting for an operator
    Reject {
        #[arg(required = true, value_parser = task_id)]
        ids: Vec<String>,
        /// Why (the owner sees it)
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct Ids {
    #[arg(required = true, value_parser = task_id)]
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// Where: NODE, NODE:NUMA, NODE::GPU,GPU or NODE:NUMA::GPU,GPU; repeat for one task per target
    #[arg(short = 't', long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,
    /// CPU cores (0: no limit)
    #[arg(short = 'c', long, value_name = "N")]
    pub cores: Option<i64>,
    /// Memory limit, e.g. 512M, 4G
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = super::memory)]
    pub memory: Option<i64>,
    /// A registry image to run in (instead of an environment)
    #[arg(long, conflicts_with = "env")]
    pub image: Option<String>,
    /// An environment to run in (default: the host's)
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// An environment variable for the task; repeatable
    #[arg(short = 'e', long = "env-var", value_name = "KEY=VALUE", value_parser = super::key_value)]
    pub env_vars: Vec<(String, String)>,
    /// Working directory in the container
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Kill the task this long after it starts: 90s, 15m, 2h
    #[arg(long, value_name = "DURATION", value_parser = super::seconds)]
    pub timeout: Option<i64>,
    /// Run again up to N times when an attempt fails
    #[arg(long, value_name = "N")]
    pub retries: Option<i64>,
    /// Which endings are retried (default failed,lost)
    #[arg(long, value_delimiter = ',', value_name = "failed,lost,timed_out")]
    pub retry_on: Vec<String>,
    /// Wait before the first retry (doubled after each): 10s, 1m
    #[arg(long, value_name = "DURATION", value_parser = super::seconds)]
    pub retry_backoff: Option<i64>,
    /// Higher runs first
    #[arg(long, value_name = "P")]
    pub priority: Option<i64>,
    /// Wait until the task ends; exit with its exit code
    #[arg(long)]
    pub wait: bool,
    /// Print the task's output as it runs (implies --wait)
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only tasks in this state (pending, running, completed, failed, ...)
    #[arg(long)]
    pub status: Option<String>,
    /// Only tasks placed on this node
    #[arg(long)]
    pub node: Option<String>,
    /// command, vps or all
    #[arg(long = "type", default_value = "command")]
    pub task_type: String,
    /// Only your own
    #[arg(long)]
    pub mine: bool,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// Then print every change as it happens (from the event stream) until interrupted
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[arg(value_parser = task_id)]
    pub id: String,
    /// Keep printing new output until the task ends
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Standard error instead of standard output
    #[arg(long)]
    pub stderr: bool,
    /// Only the last N lines (then follow, with -f)
    #[arg(long, value_name = "N")]
    pub lines: Option<u32>,
    /// An earlier attempt of a retried task
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
}

pub async fn run(s: Session, c: TaskCmd) -> CliResult {
    match c {
        TaskCmd::Submit(a) => submit(&s, a).await,
        TaskCmd::List(a) => list(&s, a).await,
        TaskCmd::Status { id } => {
            let t = s.get(&format!("/api/status/{id}")).await?;
            s.show(&t, |t| print!("{}", describe(t)));
            Ok(())
        }
        TaskCmd::Logs(a) => logs(&s, a).await,
        TaskCmd::Events { id } => timeline(&s, &id).await,
        TaskCmd::Attempts { id } => attempts(&s, &id).await,
        TaskCmd::Kill(i) => each(&s, &i.ids, |id| format!("/api/kill/{id}"), None).await,
        TaskCmd::Pause(i) => each(&s, &i.ids, |id| format!("/api/command/{id}/pause"), None).await,
        TaskCmd::Resume(i) => {
            each(&s, &i.ids, |id| format!("/api/command/{id}/resume"), None).await
        }
        TaskCmd::Retry(i) => each(&s, &i.ids, |id| format!("/api/tasks/{id}/retry"), None).await,
        TaskCmd::Approve(i) => each(&s, &i.ids, |id| format!("/api/approve/{id}"), None).await,
        TaskCmd::Reject { ids, reason } => {
            let body = json!({ "reason": reason });
            each(&s, &ids, |id| format!("/api/reject/{id}"), Some(&body)).await
        }
    }
}

/// One POST per id; every id is tried, the first failure decides the exit code.
async fn each(
    s: &Session,
    ids: &[String],
    path: impl Fn(&str) -> String,
    body: Option<&Value>,
) -> CliResult {
    let mut first_failure = None;
    let mut replies = Vec::new();
    for id in ids {
        match s.post(&path(id), body).await {
            Ok(v) => {
                if s.format == output::Format::Table {
                    match v.get("message").and_then(Value::as_str) {
                        Some(m) => println!("{m}"),
                        None => println!(
                            "Task {id}: attempt {}, {}",
                            output::cell(&v, "attempt"),
                            output::cell(&v, "status")
                        ),
                    }
                }
                replies.push(v);
            }
            Err(e) => {
                eprintln!("error: {id}: {e}");
                first_failure.get_or_insert(e);
            }
        }
    }
    if s.format != output::Format::Table {
        let v = if replies.len() == 1 && ids.len() == 1 {
            replies.remove(0)
        } else {
            Value::Array(replies)
        };
        output::machine(s.format, &v);
    }
    match first_failure {
        // Already said per id.
        Some(e) => Err(Failure::Task {
            code: e.exit_code(),
            message: String::new(),
        }),
        None => Ok(()),
    }
}

/// `NODE[:NUMA][::GPU,GPU]` into the submit's `targets` entry and its GPU list.
pub fn parse_target(t: &str) -> Result<(String, Option<Vec<i64>>), String> {
    let (place, gpus) = match t.split_once("::") {
        Some((p, g)) => {
            let list = g
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<i64>()
                        .map_err(|_| format!("--target {t}: '{x}' is not a GPU index"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (p, Some(list))
        }
        None => (t, None),
    };
    if place.is_empty() {
        return Err(format!("--target {t}: no node name"));
    }
    if let Some((_, numa)) = place.split_once(':') {
        numa.parse::<u32>()
            .map_err(|_| format!("--target {t}: '{numa}' is not a NUMA node number"))?;
    }
    Ok((place.to_string(), gpus))
}

async fn submit(s: &Session, a: SubmitArgs) -> CliResult {
    let mut targets = Vec::new();
    let mut gpus = Vec::new();
    for t in &a.targets {
        let (place, g) = parse_target(t).map_err(Failure::Usage)?;
        targets.push(place);
        gpus.push(g);
    }
    let mut body = json!({
        "command": a.command[0],
        "arguments": a.command[1..],
        "env_vars": a.env_vars.iter().cloned().collect::<BTreeMap<_, _>>(),
    });
    let set = |body: &mut Value, k: &str, v: Value| {
        if !v.is_null() {
            body[k] = v;
        }
    };
    set(&mut body, "required_cores", json!(a.cores));
    set(&mut body, "required_memory_bytes", json!(a.memory));
    set(&mut body, "registry_image", json!(a.image));
    set(&mut body, "container_name", json!(a.env));
    set(&mut body, "working_dir", json!(a.workdir));
    set(&mut body, "timeout_seconds", json!(a.timeout));
    set(&mut body, "max_retries", json!(a.retries));
    set(&mut body, "retry_backoff_seconds", json!(a.retry_backoff));
    set(&mut body, "priority", json!(a.priority));
    if !a.retry_on.is_empty() {
        body["retry_on"] = json!(a.retry_on);
    }
    if !targets.is_empty() {
        body["targets"] = json!(targets);
        if gpus.iter().any(Option::is_some) {
            let lists: Vec<Vec<i64>> = gpus.into_iter().map(Option::unwrap_or_default).collect();
            body["required_gpus"] = json!(lists);
        }
    }
    let reply = s.post("/api/submit", Some(&body)).await?;
    let ids: Vec<String> = reply["task_ids"]
        .as_array()
        .map(|l| l.iter().map(output::show).collect())
        .unwrap_or_default();
    if !(a.wait || a.follow) {
        s.show(&reply, |r| {
            println!("{}", output::cell(r, "message"));
            for id in &ids {
                println!("{id}");
            }
        });
        return Ok(());
    }
    if s.format == output::Format::Table {
        // The ids first, on stderr, so stdout carries only the task's output.
        eprintln!("{}", output::cell(&reply, "message"));
        for id in &ids {
            eprintln!("task {id}");
        }
    }
    if a.follow {
        if let Some(first) = ids.first() {
            follow_log(s, first, "stdout", None, None).await?;
        }
    }
    let finals = wait_all(s, &ids).await?;
    if s.format != output::Format::Table {
        output::machine(s.format, &Value::Array(finals.clone()));
    }
    let mut code = 0;
    for t in &finals {
        let c = exit_code_of(t);
        if s.format == output::Format::Table {
            eprintln!("task {}: {}", output::cell(t, "task_id"), outcome(t));
        }
        if code == 0 {
            code = c;
        }
    }
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::Task {
            code,
            message: String::new(),
        })
    }
}

/// How a final task maps to `ferry`'s exit code: its own exit code when it failed with one
/// (1 to 255), 1 for every other unsuccessful end.
pub fn exit_code_of(t: &Value) -> i32 {
    match t["status"].as_str() {
        Some("completed") => 0,
        Some("failed") => match t["exit_code"].as_i64() {
            Some(c @ 1..=255) => c as i32,
            _ => 1,
        },
        _ => 1,
    }
}

fn outcome(t: &Value) -> String {
    let mut s = output::cell(t, "status");
    if let Some(c) = t["exit_code"].as_i64() {
        s.push_str(&format!(" (exit code {c})"));
    }
    if let Some(m) = t["error_message"].as_str() {
        s.push_str(&format!(": {m}"));
    }
    s
}

fn is_final(t: &Value) -> bool {
    matches!(
        t["status"].as_str(),
        Some(
            "completed" | "failed" | "killed" | "killed_oom" | "stopped" | "rejected" | "timed_out"
        )
    )
}

/// Waits until every task has ended, woken by the event stream (and a slow poll besides, so a
/// stream that breaks costs only time); shows a spinner with the current states.
pub async fn wait_all(s: &Session, ids: &[String]) -> CliResult<Vec<Value>> {
    let bar = crate::progress::spinner(s.progress, "waiting");
    let mut events = match ids {
        [one] => s
            .stream(
                "/api/events",
                &[("topics", "task"), ("task_id", one.as_str())],
            )
            .await
            .ok()
            .map(Events::new),
        _ => s
            .stream("/api/events", &[("topics", "task")])
            .await
            .ok()
            .map(Events::new),
    };
    loop {
        let mut tasks = Vec::new();
        for id in ids {
            tasks.push(s.get(&format!("/api/status/{id}")).await?);
        }
        let states: Vec<String> = tasks.iter().map(|t| output::cell(t, "status")).collect();
        bar.set_message(format!("{} {}", ids.join(","), states.join(",")));
        if tasks.iter().all(is_final) {
            bar.finish_and_clear();
            return Ok(tasks);
        }
        let poll = tokio::time::sleep(std::time::Duration::from_secs(5));
        match events.as_mut() {
            Some(ev) => tokio::select! {
                e = ev.next() => {
                    if !matches!(e, Ok(Some(_))) {
                        events = None;
                    }
                }
                _ = poll => {}
            },
            None => poll.await,
        }
    }
}

/// Copies a log (following it to the task's end when asked) to stdout as it arrives.
async fn follow_log(
    s: &Session,
    id: &str,
    stream: &str,
    lines: Option<u32>,
    attempt: Option<u32>,
) -> CliResult {
    let mut q: Vec<(&str, String)> = vec![("follow", "true".into())];
    if let Some(n) = lines {
        q.push(("lines", n.to_string()));
    }
    if let Some(n) = attempt {
        q.push(("attempt", n.to_string()));
    }
    let resp = s.stream(&format!("/api/tasks/{id}/{stream}"), &q).await?;
    copy_body(resp).await
}

async fn copy_body(mut resp: reqwest::Response) -> CliResult {
    let mut out = std::io::stdout().lock();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            Failure::Failed(format!(
                "the log stream broke: {}",
                crate::failure::chain(&e)
            ))
        })?;
        let Some(chunk) = chunk else { return Ok(()) };
        // A closed pipe (`| head`) ends the copy quietly.
        if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
    }
}

async fn logs(s: &Session, a: LogsArgs) -> CliResult {
    let stream = if a.stderr { "stderr" } else { "stdout" };
    if a.follow {
        return follow_log(s, &a.id, stream, a.lines, a.attempt).await;
    }
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(n) = a.lines {
        q.push(("lines", n.to_string()));
    }
    if let Some(n) = a.attempt {
        q.push(("attempt", n.to_string()));
    }
    let resp = s
        .stream(&format!("/api/tasks/{}/{stream}", a.id), &q)
        .await?;
    copy_body(resp).await
}

async fn list(s: &Session, a: ListArgs) -> CliResult {
    let mut q: Vec<(&str, String)> = vec![
        ("task_type", a.task_type.clone()),
        ("limit", a.limit.to_string()),
        ("offset", a.offset.to_string()),
    ];
    if let Some(st) = &a.status {
        q.push(("status", st.clone()));
    }
    if let Some(n) = &a.node {
        q.push(("node", n.clone()));
    }
    let path = if a.mine {
        "/api/tasks/my"
    } else {
        "/api/tasks"
    };
    // Subscribe first, so no change between the list and the stream is missed.
    let watch = if a.watch {
        Some(Events::new(
            s.stream("/api/events", &[("topics", "task,vps")]).await?,
        ))
    } else {
        None
    };
    let tasks = s.get_query(path, &q).await?;
    s.show(&tasks, |v| task_table(v).print());
    let Some(mut events) = watch else {
        return Ok(());
    };
    let mut out = std::io::stdout();
    loop {
        match events.next().await {
            Ok(Some(e)) => {
                if let Some(line) = watch_line(&e, &a) {
                    let text = if s.format == output::Format::Table {
                        line
                    } else {
                        serde_json::to_string(&e).unwrap_or_default()
                    };
                    // A closed pipe (`| grep -m1 ...`) ends the watch.
                    if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(None) => return Err(Failure::Failed("the host closed the event stream".into())),
            Err(e) => return Err(Failure::Failed(format!("the event stream broke: {e}"))),
        }
    }
}

/// One line per task event that passes the list's filters.
fn watch_line(e: &Value, a: &ListArgs) -> Option<String> {
    let kind = e["type"].as_str()?;
    if !(kind.starts_with("task.") || kind.starts_with("vps.")) {
        return None;
    }
    if let Some(st) = &a.status {
        if e["status"].as_str() != Some(st) {
            return None;
        }
    }
    if let Some(n) = &a.node {
        if e["node"].as_str() != Some(n) {
            return None;
        }
    }
    let what = match kind {
        "task.status" | "vps.status" => format!(
            "{} -> {}",
            output::cell(e, "previous_status"),
            output::cell(e, "status")
        ),
        "task.queue_position" | "vps.queue_position" => {
            format!("queue position {}", output::cell(e, "queue_position"))
        }
        other => other.to_string(),
    };
    let time = e["time"].as_str().unwrap_or("").get(11..23).unwrap_or("");
    let mut line = format!(
        "{time}  {}  {what}  node={}",
        output::cell(e, "task_id"),
        output::cell(e, "node")
    );
    if let Some(r) = e["reason"].as_str() {
        line.push_str(&format!("  ({r})"));
    }
    Some(
        line.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    )
}

pub fn task_table(v: &Value) -> Table {
    let mut t = Table::new(&[
        "ID",
        "STATUS",
        "NODE",
        "CORES",
        "TRY",
        "SUBMITTED",
        "OWNER",
        "COMMAND",
    ]);
    for x in v.as_array().into_iter().flatten() {
        let mut cmd = output::cell(x, "command");
        for arg in x["arguments"].as_array().into_iter().flatten() {
            cmd.push(' ');
            cmd.push_str(&output::show(arg));
        }
        if cmd.chars().count() > 60 {
            cmd = cmd.chars().take(57).collect::<String>() + "...";
        }
        t.row(vec![
            output::cell(x, "task_id"),
            output::cell(x, "status"),
            output::cell(x, "assigned_node"),
            output::cell(x, "required_cores"),
            output::cell(x, "attempt"),
            short_time(&x["submitted_at"]),
            output::cell(x, "owner_username"),
            cmd,
        ]);
    }
    t
}

/// `2026-12-03T17:41:03.179+00:00` as `12-03 17:41:03`.
pub fn short_time(v: &Value) -> String {
    match v
        .as_str()
        .and_then(|s| Some((s.get(5..10)?, s.get(11..19)?)))
    {
        Some((date, time)) => format!("{date} {time}"),
        None => output::show(v),
    }
}

pub fn describe(t: &Value) -> String {
    let mut out = output::fields(
        t,
        &[
            ("Task", "task_id"),
            ("Type", "task_type"),
            ("Status", "status"),
            ("Waiting", "waiting_reason"),
            ("Queue position", "queue_position"),
            ("Node", "assigned_node"),
            ("Owner", "owner_username"),
            ("Command", "command"),
            ("Arguments", "arguments"),
            ("Environment", "container_name"),
            ("Image", "docker_image_name"),
            ("Cores", "required_cores"),
            ("Memory", "required_memory_bytes"),
            ("GPUs", "required_gpus"),
            ("Priority", "priority"),
            ("Timeout (s)", "timeout_seconds"),
            ("Attempt", "attempt"),
            ("Max retries", "max_retries"),
            ("Retry at", "retry_at"),
            ("Exit code", "exit_code"),
            ("Error", "error_message"),
            ("SSH port", "ssh_port"),
            ("Submitted", "submitted_at"),
            ("Started", "started_at"),
            ("Completed", "completed_at"),
        ],
    );
    if let Some(m) = t["required_memory_bytes"].as_u64() {
        // People read sizes, not byte counts.
        out = out.replace(
            &format!("Memory          {m}\n"),
            &format!("Memory          {}\n", output::bytes(m)),
        );
    }
    if let Some(p) = t.get("preparing").filter(|p| p.is_object()) {
        out.push_str(&format!(
            "Preparing       {} {} {}/{}\n",
            output::cell(p, "stage"),
            output::cell(p, "environment"),
            output::cell(p, "bytes_done"),
            output::cell(p, "bytes_total")
        ));
    }
    out
}

async fn timeline(s: &Session, id: &str) -> CliResult {
    let v = s.get(&format!("/api/tasks/{id}/events")).await?;
    s.show(&v, |v| {
        let mut t = Table::new(&["TIME", "EVENT", "STATUS", "NODE", "TRY", "DETAIL"]);
        for e in v["events"].as_array().into_iter().flatten() {
            t.row(vec![
                e["time"]
                    .as_str()
                    .and_then(|x| x.get(11..23))
                    .unwrap_or("-")
                    .to_string(),
                output::cell(e, "event"),
                output::cell(e, "status"),
                output::cell(e, "node"),
                output::cell(e, "attempt"),
                output::cell(e, "detail"),
            ]);
        }
        t.print();
    });
    Ok(())
}

async fn attempts(s: &Session, id: &str) -> CliResult {
    let v = s.get(&format!("/api/tasks/{id}/attempts")).await?;
    s.show(&v, |v| {
        let mut t = Table::new(&["TRY", "STATUS", "NODE", "EXIT", "STARTED", "ENDED", "ERROR"]);
        for a in v["attempts"].as_array().into_iter().flatten() {
            t.row(vec![
                output::cell(a, "attempt"),
                output::cell(a, "status"),
                output::cell(a, "node"),
                output::cell(a, "exit_code"),
                short_time(&a["started_at"]),
                short_time(&a["completed_at"]),
                output::cell(a, "error_message"),
            ]);
        }
        t.print();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_node_numa_and_gpus() {
        assert_eq!(parse_target("a"), Ok(("a".into(), None)));
        assert_eq!(parse_target("a:1"), Ok(("a:1".into(), None)));
        assert_eq!(parse_target("a::0,1"), Ok(("a".into(), Some(vec![0, 1]))));
        assert_eq!(parse_target("a:0::2"), Ok(("a:0".into(), Some(vec![2]))));
        assert!(parse_target("a:x").is_err());
        assert!(parse_target("a::x").is_err());
        assert!(parse_target("::1").is_err());
    }

    #[test]
    fn exit_codes_follow_the_task() {
        assert_eq!(
            exit_code_of(&json!({"status":"completed","exit_code":0})),
            0
        );
        assert_eq!(exit_code_of(&json!({"status":"failed","exit_code":7})), 7);
        assert_eq!(exit_code_of(&json!({"status":"failed","exit_code":-1})), 1);
        assert_eq!(
            exit_code_of(&json!({"status":"timed_out","exit_code":137})),
            1
        );
        assert_eq!(exit_code_of(&json!({"status":"killed"})), 1);
    }
}
