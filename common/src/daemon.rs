//! Start-up pieces both daemons share (feature `daemon`, not used by the CLI): reading the
//! TOML config file and secret files, duration keys, logging set-up, the shutdown signal, and
//! the `main` skeleton with its exit codes (2 for a configuration error).

use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?}: expected text or json")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("{key}: {message}")]
    Value { key: &'static str, message: String },
}

/// Reads the TOML config: `explicit` must exist; the default path is read only when present.
pub fn load_file<T: for<'de> Deserialize<'de> + Default>(
    explicit: Option<&Path>,
    default: &str,
) -> Result<T, ConfigError> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(default), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path,
            error: e.to_string(),
        }),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(error) => Err(ConfigError::Read { path, error }),
    }
}

/// The first line of a secret file, trimmed; an empty file is an error.
/// Shortest cluster secret accepted: 32 bytes (the generated ones are 64 hex characters).
pub const MIN_SECRET_LEN: usize = 32;

/// Refuses a configured secret shorter than [`MIN_SECRET_LEN`].
pub fn check_secret(secret: &str) -> Result<(), ConfigError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::Value {
            key: "cluster_secret",
            message: format!(
                "{} bytes is too short: use at least {MIN_SECRET_LEN}, e.g. `od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'`",
                secret.len()
            ),
        });
    }
    Ok(())
}

/// Whether the secret was given as `--cluster-secret` (visible to every local user in `ps`).
fn secret_on_command_line() -> bool {
    std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == "--cluster-secret" || a.starts_with("--cluster-secret=")
    })
}

pub fn read_secret(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Value {
        key: "cluster_secret_file",
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(ConfigError::Value {
            key: "cluster_secret_file",
            message: format!("{} is empty", path.display()),
        });
    }
    Ok(secret)
}

/// `node_timeout = "30s"` in a config file.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    crate::units::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

pub fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::units::format_duration(*d))
}

/// An optional duration, `null` when unset.
pub fn ser_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

/// Logs to stderr, filtered by `FERRY_LOG` (`RUST_LOG` syntax).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    // Colour codes only for a terminal: journald and log files would show them as garbage.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// What a daemon's configuration offers `main`.
pub trait DaemonConfig {
    fn to_toml(&self) -> String;
    fn log_format(&self) -> LogFormat;
}

/// The body of both daemons' `main`: configuration errors exit 2, `--print-config` prints and
/// exits 0, otherwise logging is set up and `run` serves until SIGTERM/SIGINT.
pub fn main<C, F, Fut>(
    name: &str,
    config: Result<C, ConfigError>,
    print_config: bool,
    run: F,
) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(C, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format());
    if secret_on_command_line() {
        tracing::warn!(
            "--cluster-secret on the command line is visible to every local user (ps, /proc); \
             use cluster_secret_file or FERRY_CLUSTER_SECRET instead"
        );
    }
    // Named threads: `top -H` and profilers tell the two daemons apart.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, Box::pin(shutdown_signal()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
