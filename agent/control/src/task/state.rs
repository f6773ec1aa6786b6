//! A task's state, as its node reports it and the API lists it.

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Stored, not yet reported by its node.
    Pending,
    /// Its node is pulling its image or starting it.
    Starting,
    Running,
    /// Its process ended by itself.
    Exited,
    /// An operator stopped it.
    Stopped,
    /// Its shim vanished without recording an exit.
    Lost,
    /// A state a newer node reported that this release does not know.
    #[serde(other)]
    Unknown,
}

/// A task's health as its node's checks find it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Healthy,
    Unhealthy,
    /// No check has answered yet (or the task has none), or a health a
    /// newer node reported that this release does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl TaskState {
    /// The lowercase name the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Stopped => "stopped",
            TaskState::Lost => "lost",
            TaskState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that `{:<10}` in the tables still aligns.
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_and_write_as_lowercase_names() {
        for s in [
            TaskState::Pending,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Exited,
            TaskState::Stopped,
            TaskState::Lost,
        ] {
            let json = serde_json::to_string(&s).expect("serializes");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<TaskState>(&json).ok(), Some(s));
        }
        assert_eq!(
            serde_json::from_str::<TaskState>("\"evicted\"").ok(),
            Some(TaskState::Unknown)
        );
        assert_eq!(format!("[{:<8}]", TaskState::Running), "[running ]");
    }
}
