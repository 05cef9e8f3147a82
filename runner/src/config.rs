//! Runner configuration: defaults < TOML file < `FERRY_*` environment < flags. Every key is
//! documented in docs/configuration.md; an unknown key or a bad value stops the runner with exit
//! code 2 and a message naming the key.

use clap::Parser;
use ferry_common::daemon::{de_duration, load_file, read_secret, ser_duration};
pub use ferry_common::daemon::{ConfigError, LogFormat};
use ferry_common::units::{parse_duration, parse_size};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "ferry-runner",
    version,
    about = "Ferry runner: runs the host's tasks in Docker on this node"
)]
#[serde(deny_unknown_fields)]
pub struct RunnerArgs {
    /// TOML config file [default: /etc/ferry/runner.toml, when present]
    #[arg(long, env = "FERRY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Address the runner API listens on [default: 0.0.0.0:8001]
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Base URL of the host [default: http://127.0.0.1:8000]
    #[arg(long, env = "FERRY_HOST_URL")]
    pub host_url: Option<String>,
    /// Node name, unique in the cluster [default: this machine's hostname]
    #[arg(long, env = "FERRY_NAME")]
    pub name: Option<String>,
    /// Directory for logs and runner state [default: /var/lib/ferry/runner]
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shared secret every host<->runner call carries (required, or cluster_secret_file)
    #[arg(long, env = "FERRY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (first line)
    #[arg(long, env = "FERRY_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Period of heartbeats to the host [default: 5s]
    #[arg(long, env = "FERRY_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub heartbeat_interval: Option<Duration>,
    /// URL the host should use to reach this runner [default: derived from listen and the route to the host]
    #[arg(long, env = "FERRY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Shared filesystem: <shared_dir>/shared_data is mounted at /shared, logs go to <shared_dir>/logs [default: none]
    #[arg(long, env = "FERRY_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Node-local scratch directory mounted at /local_temp [default: <data_dir>/local_temp]
    #[arg(long, env = "FERRY_LOCAL_TEMP_DIR")]
    pub local_temp_dir: Option<PathBuf>,
    /// Cores offered to the cluster [default: all logical CPUs]
    #[arg(long, env = "FERRY_CORES")]
    pub cores: Option<u32>,
    /// Memory offered to the cluster, e.g. 16G [default: physical memory]
    #[arg(long, env = "FERRY_MEMORY")]
    pub memory: Option<String>,
    /// nvidia-smi used to discover GPUs; none found = no GPUs [default: nvidia-smi on PATH]
    #[arg(long, env = "FERRY_NVIDIA_SMI")]
    pub nvidia_smi: Option<PathBuf>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "FERRY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Memory limit of a task that gives no required_memory_bytes, e.g. 4G [default: its cores' share of the node's memory]
    #[arg(long, env = "FERRY_DEFAULT_MEMORY")]
    pub default_memory: Option<String>,
    /// Most processes (and threads) one task's container may hold [default: 4096]
    #[arg(long, env = "FERRY_PIDS_LIMIT")]
    pub pids_limit: Option<i64>,
    /// Capabilities given back to tasks' containers, comma-separated, e.g. NET_RAW [default: none]
    #[arg(long, env = "FERRY_CAP_ADD", value_delimiter = ',')]
    pub cap_add: Option<Vec<String>>,
    /// Most stdout (and stderr) kept of one task, in Ferry's copy and in the engine's [default: 64M]
    #[arg(long, env = "FERRY_MAX_LOG_SIZE")]
    pub max_log_size: Option<String>,
    /// What tasks see at /shared: per_user (<shared_dir>/shared_data/<user>) or whole [default: per_user]
    #[arg(long, env = "FERRY_SHARED_MOUNT")]
    pub shared_mount: Option<SharedMount>,
    /// Time a client has to send a request's headers (also the keep-alive idle timeout) [default: 15s]
    #[arg(long, env = "FERRY_HEADER_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub header_timeout: Option<Duration>,
    /// How long a failing nvidia-smi may fail before the node's GPUs are withdrawn (the last
    /// good list is reported meanwhile) [default: 5m]
    #[arg(long, env = "FERRY_GPU_FAILURE_GRACE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub gpu_failure_grace: Option<Duration>,
    /// Take a snapshot of a VPS when it is stopped, so a restart keeps its files [default: true]
    #[arg(long, env = "FERRY_SNAPSHOT_ON_STOP")]
    pub snapshot_on_stop: Option<bool>,
    /// Snapshots kept per VPS, oldest dropped first; 0 keeps all [default: 3]
    #[arg(long, env = "FERRY_MAX_SNAPSHOTS_PER_VPS")]
    pub max_snapshots_per_vps: Option<u32>,
    /// How long a stopping VPS has after SIGTERM before it is killed [default: 10s]
    #[arg(long, env = "FERRY_VPS_STOP_GRACE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub vps_stop_grace: Option<Duration>,
}

/// What `/shared` is in a task when `shared_dir` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedMount {
    /// `<shared_dir>/shared_data/<owner>`: each user sees their own directory only.
    #[default]
    PerUser,
    /// `<shared_dir>/shared_data`: every task sees every user's files (the original's layout).
    Whole,
}

impl std::str::FromStr for SharedMount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "per_user" => Ok(SharedMount::PerUser),
            "whole" => Ok(SharedMount::Whole),
            other => Err(format!("{other:?}: expected per_user or whole")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunnerConfig {
    pub listen: SocketAddr,
    pub host_url: String,
    pub name: String,
    pub data_dir: PathBuf,
    #[serde(skip)]
    pub cluster_secret: String,
    pub cluster_secret_file: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub heartbeat_interval: Duration,
    pub advertise_url: Option<String>,
    pub shared_dir: Option<PathBuf>,
    pub local_temp_dir: PathBuf,
    pub cores: Option<u32>,
    #[serde(serialize_with = "ser_size")]
    pub memory: Option<u64>,
    pub log_format: LogFormat,
    pub nvidia_smi: PathBuf,
    /// Fixed memory limit of tasks without `required_memory_bytes`; `None`: their cores' share.
    #[serde(serialize_with = "ser_size")]
    pub default_memory: Option<u64>,
    pub pids_limit: i64,
    #[serde(serialize_with = "ser_duration")]
    pub header_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub gpu_failure_grace: Duration,
    /// Capability names (upper case, without `CAP_`) added to every task's container.
    pub cap_add: Vec<String>,
    #[serde(serialize_with = "ser_size_value")]
    pub max_log_size: u64,
    pub shared_mount: SharedMount,
    pub snapshot_on_stop: bool,
    /// 0: keep every snapshot.
    pub max_snapshots_per_vps: u32,
    #[serde(serialize_with = "ser_duration")]
    pub vps_stop_grace: Duration,
}

/// Docker refuses memory limits below 6 MiB.
const MIN_MEMORY_LIMIT: u64 = 6 << 20;

const DEFAULT_CONFIG: &str = "/etc/ferry/runner.toml";

/// Writes a size the way the config file takes it (`"1073741824"`, a string).
fn ser_size<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.serialize_str(&n.to_string()),
        None => s.serialize_none(),
    }
}

fn ser_size_value<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// A size key, parsed.
fn size_key(key: &'static str, raw: Option<String>) -> Result<Option<u64>, ConfigError> {
    raw.map(|m| {
        parse_size(&m).map_err(|e| ConfigError::Value {
            key,
            message: e.to_string(),
        })
    })
    .transpose()
}

/// Capability names as Docker takes them: upper case, without the `CAP_` prefix.
fn capabilities(raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut caps = Vec::new();
    for name in raw {
        let upper = name.trim().to_ascii_uppercase();
        let cap = upper.strip_prefix("CAP_").unwrap_or(&upper).to_string();
        if cap.is_empty()
            || !cap
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::Value {
                key: "cap_add",
                message: format!("{name:?} is not a capability name (example: NET_RAW)"),
            });
        }
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    Ok(caps)
}

impl RunnerArgs {
    pub fn resolve(self) -> Result<RunnerConfig, ConfigError> {
        let file: RunnerArgs = load_file(self.config.as_deref(), DEFAULT_CONFIG)?;
        let pick = |f: &dyn Fn(&RunnerArgs) -> Option<String>| f(&self).or_else(|| f(&file));
        let data_dir: PathBuf = self
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| "/var/lib/ferry/runner".into());
        let secret_file = self
            .cluster_secret_file
            .clone()
            .or(file.cluster_secret_file.clone());
        let secret = match (pick(&|a| a.cluster_secret.clone()), &secret_file) {
            (Some(s), _) if !s.trim().is_empty() => s.trim().to_string(),
            (_, Some(path)) => read_secret(path)?,
            _ => {
                return Err(ConfigError::Value {
                    key: "cluster_secret",
                    message: "not set: give the host's secret as cluster_secret, FERRY_CLUSTER_SECRET or cluster_secret_file".into(),
                })
            }
        };
        ferry_common::daemon::check_secret(&secret)?;
        let host_url =
            pick(&|a| a.host_url.clone()).unwrap_or_else(|| "http://127.0.0.1:8000".into());
        let host_url = host_url.trim_end_matches('/').to_string();
        if reqwest::Url::parse(&host_url)
            .map(|u| u.host_str().is_none() || !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return Err(ConfigError::Value {
                key: "host_url",
                message: format!("{host_url:?} is not an http URL"),
            });
        }
        let name = match pick(&|a| a.name.clone()) {
            Some(n) => n,
            None => sysinfo::System::host_name().unwrap_or_else(|| "localhost".into()),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(ConfigError::Value {
                key: "name",
                message: format!("{name:?}: use letters, digits, '.', '-', '_'"),
            });
        }
        let heartbeat_interval = self
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(Duration::from_secs(5));
        if heartbeat_interval < Duration::from_millis(100) {
            return Err(ConfigError::Value {
                key: "heartbeat_interval",
                message: "must be at least 100ms".into(),
            });
        }
        let memory = match pick(&|a| a.memory.clone()) {
            None => None,
            Some(m) => Some(parse_size(&m).map_err(|e| ConfigError::Value {
                key: "memory",
                message: e.to_string(),
            })?),
        };
        let default_memory = size_key("default_memory", pick(&|a| a.default_memory.clone()))?;
        if default_memory.is_some_and(|m| m < MIN_MEMORY_LIMIT) {
            return Err(ConfigError::Value {
                key: "default_memory",
                message: "must be at least 6M (Docker's smallest memory limit)".into(),
            });
        }
        let pids_limit = self.pids_limit.or(file.pids_limit).unwrap_or(4096);
        if pids_limit < 1 {
            return Err(ConfigError::Value {
                key: "pids_limit",
                message: "must be at least 1".into(),
            });
        }
        let max_log_size =
            size_key("max_log_size", pick(&|a| a.max_log_size.clone()))?.unwrap_or(64 << 20);
        if max_log_size < 1024 {
            return Err(ConfigError::Value {
                key: "max_log_size",
                message: "must be at least 1K".into(),
            });
        }
        let cap_add = capabilities(
            self.cap_add
                .clone()
                .or(file.cap_add.clone())
                .unwrap_or_default(),
        )?;
        let header_timeout = self
            .header_timeout
            .or(file.header_timeout)
            .unwrap_or(Duration::from_secs(15));
        if header_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Value {
                key: "header_timeout",
                message: "must be at least 100ms".into(),
            });
        }
        let cores = self.cores.or(file.cores);
        if cores == Some(0) {
            return Err(ConfigError::Value {
                key: "cores",
                message: "must be at least 1".into(),
            });
        }
        Ok(RunnerConfig {
            header_timeout,
            gpu_failure_grace: self
                .gpu_failure_grace
                .or(file.gpu_failure_grace)
                .unwrap_or(Duration::from_secs(300)),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8001))),
            host_url,
            name,
            local_temp_dir: self
                .local_temp_dir
                .clone()
                .or(file.local_temp_dir.clone())
                .unwrap_or_else(|| data_dir.join("local_temp")),
            data_dir,
            cluster_secret: secret,
            cluster_secret_file: secret_file,
            heartbeat_interval,
            advertise_url: pick(&|a| a.advertise_url.clone())
                .map(|u| u.trim_end_matches('/').to_string()),
            shared_dir: self.shared_dir.clone().or(file.shared_dir.clone()),
            cores,
            memory,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            nvidia_smi: self
                .nvidia_smi
                .clone()
                .or(file.nvidia_smi.clone())
                .unwrap_or_else(|| "nvidia-smi".into()),
            default_memory,
            pids_limit,
            cap_add,
            max_log_size,
            shared_mount: self.shared_mount.or(file.shared_mount).unwrap_or_default(),
            snapshot_on_stop: self
                .snapshot_on_stop
                .or(file.snapshot_on_stop)
                .unwrap_or(true),
            max_snapshots_per_vps: self
                .max_snapshots_per_vps
                .or(file.max_snapshots_per_vps)
                .unwrap_or(3),
            vps_stop_grace: self
                .vps_stop_grace
                .or(file.vps_stop_grace)
                .unwrap_or(Duration::from_secs(10)),
        })
    }
}

impl ferry_common::daemon::DaemonConfig for RunnerConfig {
    fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl RunnerConfig {
    /// Where task logs are written: the shared dir when there is one, else the data dir.
    pub fn log_dir(&self) -> PathBuf {
        match &self.shared_dir {
            Some(d) => d.join("logs"),
            None => self.data_dir.join("logs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_required_and_keys_are_checked() {
        let err = RunnerArgs::parse_from(["ferry-runner", "--config", "/nonexistent/x.toml"])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.toml"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.toml");
        std::fs::write(&f, "name = \"n1\"\n").unwrap();
        let err = RunnerArgs::parse_from(["ferry-runner", "--config", f.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().starts_with("cluster_secret"), "{err}");
        std::fs::write(
            &f,
            "cluster_secret = \"0123456789abcdef0123456789abcdef\"\nheartbeat_interval = \"2s\"\nmemory = \"1G\"\nbogus = 1\n",
        )
        .unwrap();
        let err = RunnerArgs::parse_from(["ferry-runner", "--config", f.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        std::fs::write(
            &f,
            "cluster_secret = \"0123456789abcdef0123456789abcdef\"\nheartbeat_interval = \"2s\"\nmemory = \"1G\"\n",
        )
        .unwrap();
        let c = RunnerArgs::parse_from([
            "ferry-runner",
            "--config",
            f.to_str().unwrap(),
            "--name",
            "n2",
        ])
        .resolve()
        .unwrap();
        assert_eq!(c.name, "n2");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.memory, Some(1 << 30));
        assert_eq!(
            c.local_temp_dir,
            PathBuf::from("/var/lib/ferry/runner/local_temp")
        );
        // The container limits' defaults.
        assert_eq!(c.default_memory, None);
        assert_eq!(c.pids_limit, 4096);
        assert!(c.cap_add.is_empty());
        assert_eq!(c.max_log_size, 64 << 20);
        assert_eq!(c.shared_mount, SharedMount::PerUser);
        assert!(c.snapshot_on_stop);
        assert_eq!(c.max_snapshots_per_vps, 3);
        assert_eq!(c.vps_stop_grace, Duration::from_secs(10));
    }

    #[test]
    fn container_limit_keys_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.toml");
        std::fs::write(
            &f,
            "cluster_secret = \"0123456789abcdef0123456789abcdef\"\ndefault_memory = \"2G\"\npids_limit = 100\n\
             cap_add = [\"net_raw\", \"CAP_MKNOD\"]\nmax_log_size = \"1M\"\nshared_mount = \"whole\"\n",
        )
        .unwrap();
        let path = f.to_str().unwrap();
        let c = RunnerArgs::parse_from(["ferry-runner", "--config", path])
            .resolve()
            .unwrap();
        assert_eq!(c.default_memory, Some(2 << 30));
        assert_eq!(c.pids_limit, 100);
        assert_eq!(c.cap_add, vec!["NET_RAW", "MKNOD"]);
        assert_eq!(c.max_log_size, 1 << 20);
        assert_eq!(c.shared_mount, SharedMount::Whole);
        // Flags beat the file.
        let c = RunnerArgs::parse_from([
            "ferry-runner",
            "--config",
            path,
            "--pids-limit",
            "64",
            "--cap-add",
            "SYS_PTRACE,NET_ADMIN",
            "--shared-mount",
            "per_user",
        ])
        .resolve()
        .unwrap();
        assert_eq!(c.pids_limit, 64);
        assert_eq!(c.cap_add, vec!["SYS_PTRACE", "NET_ADMIN"]);
        assert_eq!(c.shared_mount, SharedMount::PerUser);
        let err = |args: &[&str]| {
            let mut all = vec!["ferry-runner", "--config", path];
            all.extend_from_slice(args);
            RunnerArgs::parse_from(all)
                .resolve()
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["--pids-limit", "0"]).starts_with("pids_limit"));
        assert!(err(&["--default-memory", "1M"]).starts_with("default_memory"));
        assert!(err(&["--max-log-size", "lots"]).starts_with("max_log_size"));
        assert!(err(&["--max-log-size", "100"]).starts_with("max_log_size"));
        assert!(err(&["--cap-add", "NET RAW"]).starts_with("cap_add"));
        assert!(RunnerArgs::try_parse_from(["ferry-runner", "--shared-mount", "all"]).is_err());
    }
}
