//! What one run of `ferry` talks to, as whom, and how it prints: the global flags resolved
//! against the environment and the config file, and the typed client built from them.

use crate::config::{self, Config, Overrides, Target};
use crate::failure::{CliResult, Failure};
use crate::output::Format;
use ferry_client::{Client, Method};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The host's URL, e.g. http://ferry-host:8000
    #[arg(
        long,
        global = true,
        env = "FERRY_HOST",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub host: Option<String>,
    /// An API token (else the context's; `ferry login` makes one)
    #[arg(
        long,
        global = true,
        env = "FERRY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A context of the config file instead of the current one
    #[arg(
        long,
        global = true,
        env = "FERRY_CONTEXT",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub context: Option<String>,
    /// Output: table for people, json or yaml (the API's own fields) for scripts
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// No progress bars even on a terminal
    #[arg(long, global = true)]
    pub no_progress: bool,
}

/// One run's connection to the host.
pub struct Session {
    pub client: Client,
    pub target: Target,
    pub format: Format,
    /// Progress bars are drawn (a terminal, and not `--no-progress`).
    pub progress: bool,
    pub config_path: PathBuf,
    pub config: Config,
    /// The context named by `--context` / `FERRY_CONTEXT`, if any.
    pub explicit_context: Option<String>,
}

/// A longest wait for streams (log follow, events, `--wait`): they last as long as the task.
const LONG_TIMEOUT: Duration = Duration::from_secs(600);
const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

impl Session {
    /// `new_context`: a `--context` that does not exist yet is fine (`ferry login` makes it).
    pub fn open(g: &GlobalArgs, new_context: bool) -> CliResult<Session> {
        let config_path = config::default_path().map_err(|e| Failure::Usage(e.to_string()))?;
        let config = Config::load(&config_path).map_err(|e| Failure::Usage(e.to_string()))?;
        let mut o = Overrides {
            host: g.host.clone().filter(|h| !h.is_empty()),
            token: g.token.clone().filter(|t| !t.is_empty()),
            context: g.context.clone().filter(|c| !c.is_empty()),
        };
        let target = match config.resolve(&o) {
            Ok(t) => t,
            Err(_) if new_context => {
                o.context = None;
                config
                    .resolve(&o)
                    .map_err(|e| Failure::Usage(e.to_string()))?
            }
            Err(e) => return Err(Failure::Usage(e.to_string())),
        };
        let mut b = Client::builder(target.host.clone());
        if let Some(t) = &target.token {
            b = b.bearer_token(t.clone());
        }
        let client = b
            .build()
            .map_err(|e| Failure::Usage(format!("--host {}: {e}", target.host)))?;
        Ok(Session {
            client,
            format: g.output,
            progress: !g.no_progress && crate::output::interactive(),
            target,
            config_path,
            config,
            explicit_context: g.context.clone().filter(|c| !c.is_empty()),
        })
    }

    pub fn host(&self) -> &str {
        &self.target.host
    }

    /// A client error as this run says it.
    pub fn fail(&self, e: ferry_client::Error) -> Failure {
        Failure::from_client(self.host(), e)
    }

    /// A JSON route's reply as the host sent it; a non-2xx reply is a [`Failure`].
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let mut rb = self.client.raw(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send(rb, &method, path).await
    }

    pub async fn get(&self, path: &str) -> CliResult<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn get_query(&self, path: &str, query: &impl Serialize) -> CliResult<Value> {
        let rb = self.client.raw(Method::GET, path).query(query);
        self.send(rb, &Method::GET, path).await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> CliResult<Value> {
        self.call(Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> CliResult<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// Requests that may take long on the host's side (VPS create and restart wait for the
    /// VPS, snapshots commit, file copies carry up to 50 MiB) get a longer deadline than the
    /// client's default.
    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
    ) -> CliResult<Value> {
        let rb = if *method != Method::GET || path.starts_with("/api/fs/") {
            rb.timeout(LONG_TIMEOUT)
        } else {
            rb
        };
        let (status, value) = ferry_client::send_raw(rb).await.map_err(|e| self.fail(e))?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        Err(self.fail(http_error(method, path, status, &value)))
    }

    /// A request whose body is read as it arrives (log follow, events): no total deadline.
    pub async fn stream(&self, path: &str, query: &impl Serialize) -> CliResult<reqwest::Response> {
        let resp = self
            .client
            .raw(Method::GET, path)
            .query(query)
            .timeout(STREAM_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                self.fail(ferry_client::Error::Transport {
                    method: Method::GET,
                    path: path.to_string(),
                    source: e,
                })
            })?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Err(self.fail(http_error(&Method::GET, path, status, &value)))
    }

    /// Prints `value` as JSON/YAML when asked; else runs `table` to print it for people.
    pub fn show(&self, value: &Value, table: impl FnOnce(&Value)) {
        if !crate::output::machine(self.format, value) {
            table(value);
        }
    }

    /// Prints a reply that is only a message: its `message` for people, all of it for scripts.
    pub fn said(&self, value: &Value) {
        self.show(value, |v| match v.get("message").and_then(Value::as_str) {
            Some(m) => println!("{m}"),
            None => println!("{}", crate::output::show(v)),
        });
    }
}

fn http_error(method: &Method, path: &str, status: u16, value: &Value) -> ferry_client::Error {
    let detail = match value.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => match value {
            Value::Null => String::from("no detail"),
            Value::String(s) => s.chars().take(1000).collect(),
            v => v.to_string(),
        },
    };
    ferry_client::Error::Http {
        method: method.clone(),
        path: path.to_string(),
        status: ferry_client::StatusCode::from_u16(status)
            .unwrap_or(ferry_client::StatusCode::INTERNAL_SERVER_ERROR),
        detail,
    }
}

/// A task or VPS id as the host writes them: decimal digits.
pub fn task_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a task id (the digits `ferry task list` shows)"
        ))
    }
}
