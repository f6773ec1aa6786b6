//! The handlers, one file per resource: joining ([`join`]), nodes
//! ([`nodes`]), the long-polls ([`watch`]), the cluster ([`cluster`]),
//! tasks ([`tasks`]), join and user tokens ([`tokens`]), the audit log
//! ([`audit_log`]), break-glass sessions ([`exec`]), apps with their
//! deployments ([`apps`]), jobs with their runs ([`jobs`]), update bundles with node upgrades
//! ([`bundles`]) and the edge's certificates ([`edge`]). Each takes its
//! caller from an extractor of [`super::auth`] and answers with
//! [`super::error::ApiError`] on failure.

pub mod apps;
pub mod audit_log;
pub mod bundles;
pub mod cluster;
pub mod edge;
pub mod exec;
pub mod jobs;
pub mod join;
pub mod nodes;
pub mod tasks;
pub mod tokens;
pub mod watch;
