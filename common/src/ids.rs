//! Task ids: 64-bit snowflakes, written as decimal strings towards clients because they exceed
//! 2^53 (JavaScript and some JSON parsers would round them), accepted as strings or numbers.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl TaskId {
    /// Builds a snowflake: milliseconds since the Unix epoch in the top 42 bits, a 10-bit
    /// instance number and a 12-bit sequence, as the original lays them out.
    pub fn snowflake(unix_ms: u64, instance: u16, sequence: u16) -> TaskId {
        TaskId((unix_ms << 22) | (u64::from(instance & 0x3ff) << 12) | u64::from(sequence & 0xfff))
    }

    /// Milliseconds since the Unix epoch encoded in the id.
    pub fn unix_ms(self) -> u64 {
        self.0 >> 22
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("task id must be a positive decimal integer, got {0:?}")]
pub struct BadTaskId(pub String);

impl FromStr for TaskId {
    type Err = BadTaskId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(TaskId(n)),
            _ => Err(BadTaskId(s.to_string())),
        }
    }
}

/// In the API a task id is a decimal string (see the module doc).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for TaskId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[1-9][0-9]*$"))
            .description(Some("A 64-bit task id written as a decimal string"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for TaskId {}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = TaskId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a task id as a decimal string or a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TaskId, E> {
                Ok(TaskId(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TaskId, E> {
                u64::try_from(v)
                    .map(TaskId)
                    .map_err(|_| E::custom("task id must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TaskId, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_string_and_reads_both_forms() {
        let id = TaskId(7199539478398935040);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"7199539478398935040\""
        );
        let a: TaskId = serde_json::from_str("\"7199539478398935040\"").unwrap();
        let b: TaskId = serde_json::from_str("7199539478398935040").unwrap();
        assert_eq!(a, id);
        assert_eq!(b, id);
        assert!(serde_json::from_str::<TaskId>("\"abc\"").is_err());
        assert!(serde_json::from_str::<TaskId>("-3").is_err());
        assert!("0".parse::<TaskId>().is_err());
    }

    #[test]
    fn snowflake_layout() {
        let id = TaskId::snowflake(1_700_000_000_000, 5, 7);
        assert_eq!(id.unix_ms(), 1_700_000_000_000);
        assert_eq!(id.0 & 0xfff, 7);
        assert_eq!((id.0 >> 12) & 0x3ff, 5);
    }
}
