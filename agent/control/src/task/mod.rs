//! Tasks: the spec a task runs from ([`spec`]), the file an operator writes
//! ([`file`]) and the pure restart planning of one node's tasks
//! ([`restart`]).

pub mod file;
pub mod restart;
pub mod spec;
pub mod state;

pub use spec::{RestartPolicy, TaskSpec};
pub use state::{Health, TaskState};
