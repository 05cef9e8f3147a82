//! Host configuration: defaults < TOML file < `FERRY_*` environment < flags. Every key is
//! documented in docs/configuration.md; an unknown key or a bad value stops the host with exit
//! code 2 and a message naming the key.

use crate::auth::origin::{valid_origin, OriginPolicy};
use clap::Parser;
use ferry_common::daemon::{de_duration, load_file, read_secret, ser_duration, ser_opt_duration};
pub use ferry_common::daemon::{ConfigError, LogFormat};
use ferry_common::units::parse_duration;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Keys as read from flags, environment and file; all optional until [`HostArgs::resolve`].
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "ferry-host",
    version,
    about = "Ferry host: cluster state, scheduler and the user API"
)]
#[serde(deny_unknown_fields)]
pub struct HostArgs {
    /// TOML config file [default: /etc/ferry/host.toml, when present]
    #[arg(long, env = "FERRY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Address the API listens on [default: 0.0.0.0:8000]
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the database and generated secrets [default: /var/lib/ferry/host]
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shared secret every host<->runner call carries [default: generated into the data dir]
    #[arg(long, env = "FERRY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (first line)
    #[arg(long, env = "FERRY_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Silence after which a node is offline [default: 30s]
    #[arg(long, env = "FERRY_NODE_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub node_timeout: Option<Duration>,
    /// Timeout of one call to a runner [default: 10s]
    #[arg(long, env = "FERRY_RUNNER_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub runner_timeout: Option<Duration>,
    /// Shared filesystem mounted on the host and every runner (logs are read from it) [default: none]
    #[arg(long, env = "FERRY_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Environment used when a task names neither container_name nor registry_image [default: kohakuriver-base]
    #[arg(long, env = "FERRY_DEFAULT_CONTAINER_NAME")]
    pub default_container_name: Option<String>,
    /// Largest request body accepted, e.g. 1M [default: 2M]
    #[arg(long, env = "FERRY_MAX_BODY")]
    pub max_body: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "FERRY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Require users to sign in [default: true]; false makes everyone an administrator
    #[arg(long, env = "FERRY_AUTH_ENABLED")]
    pub auth_enabled: Option<bool>,
    /// With auth_enabled = false, also allow listening on a non-loopback address [default: false]
    #[arg(long, env = "FERRY_ALLOW_UNAUTHENTICATED_NETWORK")]
    pub allow_unauthenticated_network: Option<bool>,
    /// Lifetime of a login session [default: 720h]
    #[arg(long, env = "FERRY_SESSION_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub session_ttl: Option<Duration>,
    /// Mark the session cookie Secure (set when users reach the host over HTTPS) [default: false]
    #[arg(long, env = "FERRY_COOKIE_SECURE")]
    pub cookie_secure: Option<bool>,
    /// Accept `required_cores: 0` (no CPU limit, no cores booked, as the original) [default: true]
    #[arg(long, env = "FERRY_ALLOW_UNLIMITED_CORES")]
    pub allow_unlimited_cores: Option<bool>,
    /// Host names accepted in the Host header besides localhost, the loopback addresses and the
    /// listen address, comma-separated; `*` accepts any. Always checked with auth off; with auth
    /// on, checked only when set [default: none]
    #[arg(long, env = "FERRY_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (scheme://host[:port]) whose pages may use the API with a session, besides the
    /// host's own, comma-separated [default: none]
    #[arg(long, env = "FERRY_TRUSTED_ORIGINS", value_delimiter = ',')]
    pub trusted_origins: Option<Vec<String>>,
    /// Reverse proxies (IP addresses) whose X-Forwarded-Host / Forwarded headers are believed,
    /// comma-separated [default: none]
    #[arg(long, env = "FERRY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// A second address serving only the runner routes (register, heartbeat, update); when
    /// set, `listen` no longer serves them [default: none]
    #[arg(long, env = "FERRY_RUNNER_LISTEN")]
    pub runner_listen: Option<SocketAddr>,
    /// Time a client has to send a request's headers, after connecting or after its previous
    /// answer (also the keep-alive idle timeout) [default: 15s]
    #[arg(long, env = "FERRY_HEADER_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub header_timeout: Option<Duration>,
    /// Open connections per listen address; more wait to be accepted [default: 4096]
    #[arg(long, env = "FERRY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// User requests (every route but the runners') in progress at once; more get 503 [default: 256]
    #[arg(long, env = "FERRY_MAX_USER_REQUESTS")]
    pub max_user_requests: Option<usize>,
    /// Most targets one submit may name [default: 256]
    #[arg(long, env = "FERRY_MAX_TARGETS")]
    pub max_targets: Option<usize>,
    /// Task output reads in progress at once; more get 503 [default: 32]
    #[arg(long, env = "FERRY_MAX_LOG_READS")]
    pub max_log_reads: Option<usize>,
    /// How long audit log entries are kept [default: 90days]
    #[arg(long, env = "FERRY_AUDIT_RETENTION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub audit_retention: Option<Duration>,
    /// Time limit of a command task that names no `timeout_seconds` [default: none]
    #[arg(long, env = "FERRY_DEFAULT_TASK_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub default_task_timeout: Option<Duration>,
    /// Longest `timeout_seconds` a task may ask for [default: 30days]
    #[arg(long, env = "FERRY_MAX_TASK_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub max_task_timeout: Option<Duration>,
    /// Most `max_retries` a task may ask for (at most 99) [default: 10]
    #[arg(long, env = "FERRY_MAX_TASK_RETRIES")]
    pub max_task_retries: Option<u32>,
    /// Wait before a task's first retry when it names no `retry_backoff_seconds`; each
    /// further retry waits twice as long, up to 1h [default: 10s]
    #[arg(long, env = "FERRY_RETRY_BACKOFF", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub retry_backoff: Option<Duration>,
    /// Highest priority a `user` may give a task; operators and admins may give any [default: 0]
    #[arg(long, env = "FERRY_MAX_USER_PRIORITY", allow_hyphen_values = true)]
    pub max_user_priority: Option<i64>,
    /// Address of the SSH relay (`REQUEST_TUNNEL <id>`), or `off` [default: the listen address's IP, port 8002]
    #[arg(long, env = "FERRY_SSH_RELAY_LISTEN")]
    pub ssh_relay_listen: Option<String>,
    /// Allow VPSes with ssh_key_mode `none` (root without a password over SSH) [default: false]
    #[arg(long, env = "FERRY_ALLOW_PASSWORDLESS_VPS")]
    pub allow_passwordless_vps: Option<bool>,
    /// Let the `user` role create VPSes (they wait for an operator's approval, like tasks) [default: false]
    #[arg(long, env = "FERRY_USER_VPS")]
    pub user_vps: Option<bool>,
    /// Let viewers list, read and stat files in every running task [default: false]
    #[arg(long, env = "FERRY_VIEWER_FILE_ACCESS")]
    pub viewer_file_access: Option<bool>,
    /// How long `vps/create` and `vps/restart` wait for the VPS to run before answering that it is on its way [default: 2m]
    #[arg(long, env = "FERRY_VPS_START_WAIT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub vps_start_wait: Option<Duration>,
    /// Where environment tarballs are kept [default: <shared_dir>/kohakuriver-containers, else <data_dir>/environments]
    #[arg(long, env = "FERRY_ENV_DIR")]
    pub env_dir: Option<PathBuf>,
    /// Versions of each environment kept; older ones are pruned after a new one is packaged [default: 2]
    #[arg(long, env = "FERRY_ENV_KEEP")]
    pub env_keep: Option<usize>,
    /// Most bytes all environment tarballs may take; packaging beyond it is refused, e.g. 200G [default: unlimited]
    #[arg(long, env = "FERRY_MAX_ENV_STORE")]
    pub max_env_store: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct HostConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(skip)]
    pub cluster_secret: String,
    pub cluster_secret_file: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub node_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub runner_timeout: Duration,
    pub shared_dir: Option<PathBuf>,
    pub default_container_name: String,
    pub max_body: String,
    #[serde(skip)]
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    pub auth_enabled: bool,
    pub allow_unauthenticated_network: bool,
    #[serde(serialize_with = "ser_duration")]
    pub session_ttl: Duration,
    pub cookie_secure: bool,
    pub allow_unlimited_cores: bool,
    pub allowed_hosts: Vec<String>,
    pub trusted_origins: Vec<String>,
    pub trusted_proxies: Vec<IpAddr>,
    pub runner_listen: Option<SocketAddr>,
    #[serde(serialize_with = "ser_duration")]
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_user_requests: usize,
    pub max_targets: usize,
    pub max_log_reads: usize,
    #[serde(serialize_with = "ser_duration")]
    pub audit_retention: Duration,
    /// `None`: tasks without `timeout_seconds` run as long as they like.
    #[serde(serialize_with = "ser_opt_duration")]
    pub default_task_timeout: Option<Duration>,
    #[serde(serialize_with = "ser_duration")]
    pub max_task_timeout: Duration,
    pub max_task_retries: u32,
    #[serde(serialize_with = "ser_duration")]
    pub retry_backoff: Duration,
    pub max_user_priority: i64,
    /// `None`: no SSH relay.
    pub ssh_relay_listen: Option<SocketAddr>,
    pub allow_passwordless_vps: bool,
    pub user_vps: bool,
    pub viewer_file_access: bool,
    #[serde(serialize_with = "ser_duration")]
    pub vps_start_wait: Duration,
    pub env_dir: PathBuf,
    pub env_keep: usize,
    pub max_env_store: Option<String>,
    /// `max_env_store` in bytes; 0: unlimited.
    #[serde(skip)]
    pub max_env_store_bytes: u64,
    /// The Host and cross-site checks built from the keys above.
    #[serde(skip)]
    pub origin: OriginPolicy,
}

const DEFAULT_CONFIG: &str = "/etc/ferry/host.toml";

impl HostArgs {
    /// Merges flags/env (in `self`) over the file over defaults. The cluster secret is left
    /// empty when none is configured; the caller generates one.
    pub fn resolve(self) -> Result<HostConfig, ConfigError> {
        let file = load_file(self.config.as_deref(), DEFAULT_CONFIG)?;
        let m = Merged { cli: self, file };
        let max_body = m
            .pick(|a| a.max_body.clone())
            .unwrap_or_else(|| "2M".into());
        let max_body_bytes =
            ferry_common::units::parse_size(&max_body).map_err(|e| ConfigError::Value {
                key: "max_body",
                message: e.to_string(),
            })? as usize;
        let node_timeout = m
            .pick(|a| a.node_timeout)
            .unwrap_or(Duration::from_secs(30));
        if node_timeout < Duration::from_millis(500) {
            return Err(ConfigError::Value {
                key: "node_timeout",
                message: "must be at least 500ms".into(),
            });
        }
        let secret_file = m.pick(|a| a.cluster_secret_file.clone());
        let secret = match (m.pick(|a| a.cluster_secret.clone()), &secret_file) {
            (Some(s), _) => s,
            (None, Some(path)) => read_secret(path)?,
            (None, None) => String::new(),
        };
        if !secret.is_empty() {
            ferry_common::daemon::check_secret(&secret)?;
        }
        let listen = m
            .pick(|a| a.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8000)));
        let auth_enabled = m.pick(|a| a.auth_enabled).unwrap_or(true);
        let allow_open = m.pick(|a| a.allow_unauthenticated_network).unwrap_or(false);
        if !auth_enabled && !listen.ip().is_loopback() && !allow_open {
            return Err(ConfigError::Value {
                key: "auth_enabled",
                message: format!(
                    "false would let anyone who reaches {listen} act as an administrator: \
                     listen on a loopback address, or also set allow_unauthenticated_network = true"
                ),
            });
        }
        if max_body_bytes < 1024 {
            return Err(ConfigError::Value {
                key: "max_body",
                message: "must be at least 1K".into(),
            });
        }
        let default_container_name = m
            .pick(|a| a.default_container_name.clone())
            .unwrap_or_else(|| "kohakuriver-base".into());
        let valid_env = !default_container_name.is_empty()
            && default_container_name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !valid_env {
            return Err(ConfigError::Value {
                key: "default_container_name",
                message: format!(
                    "{default_container_name:?}: use lower-case letters, digits, '.', '_', '-'"
                ),
            });
        }
        let allowed_hosts = m.pick(|a| a.allowed_hosts.clone()).unwrap_or_default();
        if let Some(bad) = allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ':', ' ']) && h.parse::<IpAddr>().is_err())
        {
            return Err(ConfigError::Value {
                key: "allowed_hosts",
                message: format!("{bad:?}: give host names or addresses without scheme or port"),
            });
        }
        let trusted_origins = m.pick(|a| a.trusted_origins.clone()).unwrap_or_default();
        if let Some(bad) = trusted_origins.iter().find(|o| !valid_origin(o)) {
            return Err(ConfigError::Value {
                key: "trusted_origins",
                message: format!(
                    "{bad:?}: write scheme://host[:port], e.g. https://dash.example.org"
                ),
            });
        }
        let trusted_proxies = m
            .pick(|a| a.trusted_proxies.clone())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                p.trim().parse::<IpAddr>().map_err(|_| ConfigError::Value {
                    key: "trusted_proxies",
                    message: format!("{p:?}: not an IP address"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // With auth off a rebound page would act as admin: the Host check always runs. With
        // auth on such a page carries no session, so the check is the operator's choice.
        let origin = OriginPolicy::new(
            listen,
            &allowed_hosts,
            &trusted_origins,
            &trusted_proxies,
            !auth_enabled || !allowed_hosts.is_empty(),
        );
        let header_timeout = m
            .pick(|a| a.header_timeout)
            .unwrap_or(Duration::from_secs(15));
        if header_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Value {
                key: "header_timeout",
                message: "must be at least 100ms".into(),
            });
        }
        let max_connections = m.pick(|a| a.max_connections).unwrap_or(4096);
        let max_user_requests = m.pick(|a| a.max_user_requests).unwrap_or(256);
        let max_targets = m.pick(|a| a.max_targets).unwrap_or(256);
        let max_log_reads = m.pick(|a| a.max_log_reads).unwrap_or(32);
        for (key, value) in [
            ("max_connections", max_connections),
            ("max_user_requests", max_user_requests),
            ("max_targets", max_targets),
            ("max_log_reads", max_log_reads),
        ] {
            if value == 0 {
                return Err(ConfigError::Value {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        let runner_listen = m.pick(|a| a.runner_listen);
        if runner_listen == Some(listen) {
            return Err(ConfigError::Value {
                key: "runner_listen",
                message: "must differ from listen".into(),
            });
        }
        let audit_retention = m
            .pick(|a| a.audit_retention)
            .unwrap_or(Duration::from_secs(90 * 24 * 3600));
        if audit_retention < Duration::from_secs(1) {
            return Err(ConfigError::Value {
                key: "audit_retention",
                message: "must be at least 1s".into(),
            });
        }
        let max_task_timeout = m
            .pick(|a| a.max_task_timeout)
            .unwrap_or(Duration::from_secs(30 * 24 * 3600));
        let default_task_timeout = m.pick(|a| a.default_task_timeout);
        if max_task_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Value {
                key: "max_task_timeout",
                message: "must be at least 1s".into(),
            });
        }
        if default_task_timeout.is_some_and(|d| d < Duration::from_secs(1) || d > max_task_timeout)
        {
            return Err(ConfigError::Value {
                key: "default_task_timeout",
                message: "must be at least 1s and at most max_task_timeout".into(),
            });
        }
        let max_task_retries = m.pick(|a| a.max_task_retries).unwrap_or(10);
        // A task has at most 100 attempts (`tasks::model::MAX_ATTEMPTS`).
        if max_task_retries > 99 {
            return Err(ConfigError::Value {
                key: "max_task_retries",
                message: format!("at most 99, got {max_task_retries}"),
            });
        }
        let retry_backoff = m
            .pick(|a| a.retry_backoff)
            .unwrap_or(Duration::from_secs(10));
        if retry_backoff > Duration::from_secs(ferry_common::task::MAX_RETRY_BACKOFF_SECS) {
            return Err(ConfigError::Value {
                key: "retry_backoff",
                message: "at most 1h".into(),
            });
        }
        let ssh_relay_listen = match m.pick(|a| a.ssh_relay_listen.clone()) {
            None => Some(SocketAddr::new(listen.ip(), 8002)),
            Some(v) if v == "off" => None,
            Some(v) => Some(v.parse().map_err(|e| ConfigError::Value {
                key: "ssh_relay_listen",
                message: format!("{v:?}: {e} (an address like 0.0.0.0:8002, or off)"),
            })?),
        };
        if ssh_relay_listen.is_some_and(|a| a == listen || Some(a) == runner_listen) {
            return Err(ConfigError::Value {
                key: "ssh_relay_listen",
                message: "must differ from listen and runner_listen".into(),
            });
        }
        let data_dir: PathBuf = m
            .pick(|a| a.data_dir.clone())
            .unwrap_or_else(|| "/var/lib/ferry/host".into());
        let shared_dir = m.pick(|a| a.shared_dir.clone());
        let env_dir = m
            .pick(|a| a.env_dir.clone())
            .unwrap_or_else(|| match &shared_dir {
                Some(shared) => shared.join("kohakuriver-containers"),
                None => data_dir.join("environments"),
            });
        let env_keep = m.pick(|a| a.env_keep).unwrap_or(2);
        if env_keep == 0 {
            return Err(ConfigError::Value {
                key: "env_keep",
                message: "must be at least 1".into(),
            });
        }
        let max_env_store = m.pick(|a| a.max_env_store.clone());
        let max_env_store_bytes = match &max_env_store {
            None => 0,
            Some(v) => ferry_common::units::parse_size(v).map_err(|e| ConfigError::Value {
                key: "max_env_store",
                message: e.to_string(),
            })?,
        };
        Ok(HostConfig {
            env_dir,
            env_keep,
            max_env_store,
            max_env_store_bytes,
            ssh_relay_listen,
            allow_passwordless_vps: m.pick(|a| a.allow_passwordless_vps).unwrap_or(false),
            user_vps: m.pick(|a| a.user_vps).unwrap_or(false),
            viewer_file_access: m.pick(|a| a.viewer_file_access).unwrap_or(false),
            vps_start_wait: m
                .pick(|a| a.vps_start_wait)
                .unwrap_or(Duration::from_secs(120)),
            max_targets,
            max_log_reads,
            audit_retention,
            default_task_timeout,
            max_task_timeout,
            max_task_retries,
            retry_backoff,
            max_user_priority: m.pick(|a| a.max_user_priority).unwrap_or(0),
            runner_listen,
            header_timeout,
            max_connections,
            max_user_requests,
            allowed_hosts,
            trusted_origins,
            trusted_proxies,
            origin,
            listen,
            data_dir,
            cluster_secret: secret,
            cluster_secret_file: secret_file,
            node_timeout,
            runner_timeout: m
                .pick(|a| a.runner_timeout)
                .unwrap_or(Duration::from_secs(10)),
            shared_dir,
            default_container_name,
            max_body,
            max_body_bytes,
            log_format: m.pick(|a| a.log_format).unwrap_or_default(),
            auth_enabled,
            allow_unauthenticated_network: allow_open,
            session_ttl: m
                .pick(|a| a.session_ttl)
                .unwrap_or(Duration::from_secs(720 * 3600)),
            cookie_secure: m.pick(|a| a.cookie_secure).unwrap_or(false),
            allow_unlimited_cores: m.pick(|a| a.allow_unlimited_cores).unwrap_or(true),
        })
    }
}

struct Merged {
    cli: HostArgs,
    file: HostArgs,
}

impl Merged {
    fn pick<T>(&self, f: impl Fn(&HostArgs) -> Option<T>) -> Option<T> {
        f(&self.cli).or_else(|| f(&self.file))
    }
}

impl ferry_common::daemon::DaemonConfig for HostConfig {
    fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

impl HostConfig {
    /// The limits of each listener.
    pub fn serve_limits(&self) -> ferry_common::serve::ServeLimits {
        ferry_common::serve::ServeLimits {
            header_timeout: self.header_timeout,
            max_connections: self.max_connections,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nnode_timeout = \"7s\"\ncluster_secret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let args = HostArgs::parse_from([
            "ferry-host",
            "--config",
            file.to_str().unwrap(),
            "--node-timeout",
            "3s",
        ]);
        let c = args.resolve().unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.node_timeout, Duration::from_secs(3));
        assert_eq!(c.runner_timeout, Duration::from_secs(10));
        assert_eq!(c.cluster_secret, "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        let err = HostArgs::parse_from(["ferry-host", "--config", file.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        std::fs::write(&file, "node_timeout = \"soon\"\n").unwrap();
        let err = HostArgs::parse_from(["ferry-host", "--config", file.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("node_timeout"), "{err}");
        assert!(HostArgs::try_parse_from(["ferry-host", "--node-timeout", "soon"]).is_err());
    }
}
