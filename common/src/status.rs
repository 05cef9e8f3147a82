//! Task states and the transitions Ferry allows between them.
//!
//! Differences from the original, on purpose: `pending` means "queued on the host, waiting for
//! resources" (the original had no queue); a final state is never overwritten (the first final
//! report wins); `lost` is not final: a task on a silent node is `lost` until its runner
//! reappears and says what really happened.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    PendingApproval,
    Rejected,
    Pending,
    Assigning,
    Running,
    Paused,
    Completed,
    Failed,
    Killed,
    KilledOom,
    Lost,
    Stopped,
    /// Ferry: killed by its runner at its `timeout_seconds` deadline.
    TimedOut,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 13] = [
        TaskStatus::PendingApproval,
        TaskStatus::Rejected,
        TaskStatus::Pending,
        TaskStatus::Assigning,
        TaskStatus::Running,
        TaskStatus::Paused,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Killed,
        TaskStatus::KilledOom,
        TaskStatus::Lost,
        TaskStatus::Stopped,
        TaskStatus::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::PendingApproval => "pending_approval",
            TaskStatus::Rejected => "rejected",
            TaskStatus::Pending => "pending",
            TaskStatus::Assigning => "assigning",
            TaskStatus::Running => "running",
            TaskStatus::Paused => "paused",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Killed => "killed",
            TaskStatus::KilledOom => "killed_oom",
            TaskStatus::Lost => "lost",
            TaskStatus::Stopped => "stopped",
            TaskStatus::TimedOut => "timed_out",
        }
    }

    /// No transition leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Killed
                | TaskStatus::KilledOom
                | TaskStatus::Stopped
                | TaskStatus::Rejected
                | TaskStatus::TimedOut
        )
    }

    /// States in which the task's resources are booked on its node: from placement until the
    /// runner says the container is gone. `lost` keeps them: the node may still be running it.
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            TaskStatus::Assigning | TaskStatus::Running | TaskStatus::Paused | TaskStatus::Lost
        )
    }

    /// Whether `self -> next` is allowed.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        if self.is_final() || self == next {
            return false;
        }
        // The ends a started (or placed) task may come to.
        let ends = matches!(
            next,
            Completed | Failed | Killed | KilledOom | Stopped | TimedOut
        );
        match self {
            PendingApproval => matches!(next, Pending | Rejected | Killed),
            Pending => matches!(next, Assigning | Killed | Failed),
            Assigning => ends || matches!(next, Running | Lost | Pending),
            Running | Paused => ends || matches!(next, Running | Paused | Lost),
            Lost => ends || matches!(next, Running | Paused | Pending),
            Rejected | Completed | Failed | Killed | KilledOom | Stopped | TimedOut => false,
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown task status {0:?} (expected one of: {names})", names = status_names())]
pub struct BadStatus(pub String);

fn status_names() -> String {
    TaskStatus::ALL.map(|s| s.as_str()).join(", ")
}

impl FromStr for TaskStatus {
    type Err = BadStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| BadStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::TaskStatus::*;
    use super::*;

    #[test]
    fn final_states_never_change() {
        for from in TaskStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in TaskStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn everyday_path_is_allowed() {
        assert!(Pending.can_become(Assigning));
        assert!(Assigning.can_become(Running));
        assert!(Running.can_become(Paused));
        assert!(Paused.can_become(Running));
        assert!(Running.can_become(Completed));
        assert!(Running.can_become(KilledOom));
        assert!(PendingApproval.can_become(Pending));
    }

    #[test]
    fn lost_recovers_and_queued_cannot_skip_placement() {
        assert!(Running.can_become(Lost));
        assert!(Lost.can_become(Running));
        assert!(Lost.can_become(Completed));
        assert!(!Pending.can_become(Running));
        assert!(!Pending.can_become(Completed));
        assert!(!PendingApproval.can_become(Running));
        assert!(!Running.can_become(Running));
    }

    #[test]
    fn resources_are_held_from_placement_to_end() {
        let holding: Vec<_> = TaskStatus::ALL
            .into_iter()
            .filter(|s| s.holds_resources())
            .collect();
        assert_eq!(holding, vec![Assigning, Running, Paused, Lost]);
    }

    #[test]
    fn parses_and_prints_wire_names() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("Running".parse::<TaskStatus>().is_err());
    }
}
