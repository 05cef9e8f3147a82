//! `~/.config/ferry/config.toml`: named contexts (one per cluster), each a host URL and the
//! API token `ferry login` made there, and which one is current.
//!
//! Where the file is: `$FERRY_CONFIG`, else `$XDG_CONFIG_HOME/ferry/config.toml`, else
//! `$HOME/.config/ferry/config.toml`. It holds tokens, so it is written 0600 (through a
//! temporary file renamed into place, so a crash never leaves half a file) in a 0700 directory.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The host a context without one talks to.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:8000";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The context used when neither `--context` nor `FERRY_CONTEXT` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The token's id on the host, so `ferry logout` can revoke it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
    /// Who signed in (shown by `ferry context list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot find the config file: set HOME, XDG_CONFIG_HOME or FERRY_CONFIG")]
    NoHome,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid ferry config: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the config file is, from the environment.
pub fn default_path() -> Result<PathBuf, ConfigError> {
    if let Some(p) = std::env::var_os("FERRY_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(x).join("ferry").join("config.toml"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Ok(PathBuf::from(h)
            .join(".config")
            .join("ferry")
            .join("config.toml")),
        None => Err(ConfigError::NoHome),
    }
}

impl Config {
    /// The file's contents; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Writes the whole file, 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let werr = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = toml::to_string_pretty(self).map_err(|e| {
            werr(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(werr)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(werr)?;
        }
        let tmp = path.with_extension(format!("toml.tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(werr)?;
        // A file left by an older tool may have wider bits; `mode` applies only at creation.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(werr)?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(werr)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            werr(e)
        })
    }
}

/// Where a command's host and token come from, strongest first: flags, `FERRY_HOST` /
/// `FERRY_TOKEN`, the chosen context (`--context`, `FERRY_CONTEXT`, `current_context`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub token: Option<String>,
    pub context: Option<String>,
}

/// What a command talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub token: Option<String>,
    /// The context it came from, if any (`ferry login` stores into it).
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no context named '{0}' (see `ferry context list`)")]
pub struct UnknownContext(pub String);

impl Config {
    pub fn resolve(&self, o: &Overrides) -> Result<Target, UnknownContext> {
        let name = o.context.clone().or_else(|| self.current_context.clone());
        let ctx = match &name {
            Some(n) => match self.contexts.get(n) {
                Some(c) => Some(c),
                // A current_context that was deleted by hand is not worth failing on, but
                // one named explicitly is.
                None if o.context.is_some() => return Err(UnknownContext(n.clone())),
                None => None,
            },
            None => None,
        };
        let host = o
            .host
            .clone()
            .or_else(|| ctx.map(|c| c.host.clone()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        // A token belongs to its context's host: with another host given, only an explicit
        // token is sent, never the context's to a stranger.
        let host_overridden =
            o.host.is_some() && ctx.is_some_and(|c| Some(&c.host) != o.host.as_ref());
        let token = o.token.clone().or_else(|| {
            if host_overridden {
                None
            } else {
                ctx.and_then(|c| c.token.clone())
            }
        });
        Ok(Target {
            host: host.trim_end_matches('/').to_string(),
            token,
            context: if ctx.is_some() { name } else { None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Config {
        let mut c = Config {
            current_context: Some("lab".into()),
            ..Default::default()
        };
        c.contexts.insert(
            "lab".into(),
            Context {
                host: "http://lab:8000".into(),
                token: Some("t-lab".into()),
                ..Default::default()
            },
        );
        c.contexts.insert(
            "big".into(),
            Context {
                host: "http://big:8000/".into(),
                token: Some("t-big".into()),
                ..Default::default()
            },
        );
        c
    }

    #[test]
    fn flags_beat_the_context_and_the_context_beats_the_default() {
        let c = two();
        let t = c.resolve(&Overrides::default()).expect("resolves");
        assert_eq!(
            (t.host.as_str(), t.token.as_deref()),
            ("http://lab:8000", Some("t-lab"))
        );
        let t = c
            .resolve(&Overrides {
                context: Some("big".into()),
                ..Default::default()
            })
            .expect("resolves");
        assert_eq!(
            (t.host.as_str(), t.token.as_deref()),
            ("http://big:8000", Some("t-big"))
        );
        let t = c
            .resolve(&Overrides {
                token: Some("explicit".into()),
                ..Default::default()
            })
            .expect("resolves");
        assert_eq!(t.token.as_deref(), Some("explicit"));
        let t = Config::default()
            .resolve(&Overrides::default())
            .expect("resolves");
        assert_eq!((t.host.as_str(), t.token), (DEFAULT_HOST, None));
    }

    #[test]
    fn a_context_token_is_never_sent_to_another_host() {
        let t = two()
            .resolve(&Overrides {
                host: Some("http://elsewhere:8000".into()),
                ..Default::default()
            })
            .expect("resolves");
        assert_eq!(t.host, "http://elsewhere:8000");
        assert_eq!(t.token, None);
    }

    #[test]
    fn an_unknown_context_named_explicitly_is_an_error() {
        let e = two()
            .resolve(&Overrides {
                context: Some("nope".into()),
                ..Default::default()
            })
            .expect_err("unknown");
        assert_eq!(e, UnknownContext("nope".into()));
    }

    #[test]
    fn the_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("config.toml");
        assert_eq!(
            Config::load(&path).expect("missing is empty"),
            Config::default()
        );
        let c = two();
        c.save(&path).expect("saved");
        assert_eq!(Config::load(&path).expect("loads"), c);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "contexts = 3").expect("write");
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }
}
