//! Environment names and what they map to: the container `kohakuriver-env-<env>` and the
//! image `kohakuriver/<env>:base`, as the original names them (runners find images by these
//! names).

use super::EnvError;

pub const CONTAINER_PREFIX: &str = "kohakuriver-env-";

/// Checks an environment name ([`ferry_common::envs::is_valid_name`]); the error names
/// `field`.
pub fn check(field: &str, name: &str) -> Result<(), EnvError> {
    if !ferry_common::envs::is_valid_name(name) {
        return Err(EnvError::BadName(format!(
            "{field}: {name:?} is not an environment name (1 to {} lower-case letters, \
             digits, '.', '_' or '-', starting with a letter or digit, no '..')",
            ferry_common::envs::MAX_NAME_LEN
        )));
    }
    Ok(())
}

/// The environment a route names: `kohakuriver-env-<env>` or `<env>` both mean `<env>`.
pub fn env_of(raw: &str) -> Result<String, EnvError> {
    let env = raw.strip_prefix(CONTAINER_PREFIX).unwrap_or(raw);
    check("name", env)?;
    Ok(env.to_string())
}

pub fn container(env: &str) -> String {
    format!("{CONTAINER_PREFIX}{env}")
}

pub fn image(env: &str) -> String {
    format!("kohakuriver/{env}:base")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_break_docker_are_refused() {
        for bad in [
            "", "a/b", "..", "a..b", "../etc", "-x", ".x", "UPPER", "sp ace", "a\0b",
        ] {
            assert!(check("name", bad).is_err(), "{bad:?} accepted");
        }
        let long = "a".repeat(65);
        assert!(check("name", &long).is_err());
        for good in ["pytorch", "py3.11", "lab_env-2", "0x"] {
            assert!(check("name", good).is_ok(), "{good:?} refused");
        }
        assert_eq!(env_of("kohakuriver-env-dev").unwrap(), "dev");
        assert_eq!(env_of("dev").unwrap(), "dev");
        assert_eq!(container("dev"), "kohakuriver-env-dev");
        assert_eq!(image("dev"), "kohakuriver/dev:base");
    }
}
