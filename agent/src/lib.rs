//! The Strata node agent and command-line interface.
//!
//! One binary, `strata`, runs in every image: `strata agent` is the daemon
//! that joins the node to the cluster; every other subcommand is the CLI.
//! Parsing and planning are pure; effects live at the edges, one module per
//! outside system (libcontainer, rtnetlink, zbus, etcd).

pub mod cli;
pub mod images;
pub mod runtime;
pub mod runtime_cli;
pub mod tasks;
pub mod testenv;
