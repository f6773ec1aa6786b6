//! The control plane's pure core: the types the masters store in etcd and
//! the API sends on the wire, the task model and its restart planning, the
//! overlay's subnet leases, who may do what ([`rbac`]) and who may join or
//! call at all ([`access`]), what the audit log records ([`audit`]), and (as they come) the cluster snapshot and
//! the planners of placement, deployments, rollouts and cron.
//!
//! Architecture invariant: nothing here does I/O, reads the clock, spawns
//! or waits. Time comes in as arguments; effects go out as plans that the
//! `agent` crate carries out. `cargo test -p control` needs no root, no
//! network and no system library, and builds on a machine that has only a
//! Rust toolchain.
//!
//! Architecture invariant: stored and wire types read what a newer writer
//! wrote. They carry a format version where they are a record of their own
//! ([`format::Format`], absent means 1) and never deny unknown fields; an
//! operator's files (task files, configs) do, through their own types
//! ([`task::file`]).

pub mod access;
pub mod api;
pub mod app;
pub mod audit;
pub mod backoff;
pub mod deploy;
pub mod edge;
pub mod exec;
pub mod firewall;
pub mod format;
pub mod job;
pub mod lease;
pub mod model;
pub mod rbac;
pub mod rollout;
pub mod schedule;
pub mod service;
pub mod task;
pub mod upgrade;
pub mod vip;
