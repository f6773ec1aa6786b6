//! The Strata node agent and command-line interface.
//!
//! One binary, `strata`, runs in every image: `strata agent` is the daemon
//! that joins the node to the cluster; every other subcommand is the CLI.
//! Parsing and planning are pure; effects live at the edges, one module per
//! outside system (libcontainer, rtnetlink, zbus, etcd, nftables' command).

pub mod api;
pub mod boot_times;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod daemon;
pub mod dns;
pub mod edge;
pub mod etcd;
pub mod exec;
pub mod firewall;
pub mod health;
pub mod images;
pub mod inroot;
pub mod notify;
pub mod obs;
pub mod overlay;
pub mod pki;
pub mod retry;
pub mod runtime;
pub mod state;
pub mod systemd;
pub mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upgrade;
