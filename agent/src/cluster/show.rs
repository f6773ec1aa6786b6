//! Human tables for the CLI (pure).

use crate::cluster::model::{ClusterStatus, NodeStatus};

/// Formats rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n") + "\n"
}

/// A byte count in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration in seconds, short.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `strata node list`.
pub fn node_list(nodes: &[NodeStatus], now: u64) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let i = &n.record.info;
            vec![
                i.name.clone(),
                i.role.to_string(),
                n.state.to_string(),
                i.addresses.first().cloned().unwrap_or_else(|| "-".into()),
                i.cpus.to_string(),
                bytes(i.memory_bytes),
                n.ready_since
                    .map_or_else(|| "-".into(), |s| age(now.saturating_sub(s))),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ROLE",
            "STATE",
            "ADDRESS",
            "CPUS",
            "MEMORY",
            "READY FOR",
        ],
        &rows,
    )
}

/// `strata node show NAME`.
pub fn node_show(n: &NodeStatus, now: u64) -> String {
    let i = &n.record.info;
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    kv("name:", i.name.clone());
    kv("role:", i.role.to_string());
    kv("state:", n.state.to_string());
    if let Some(s) = n.ready_since {
        kv("ready for:", age(now.saturating_sub(s)));
    }
    kv("addresses:", i.addresses.join(", "));
    if let Some(s) = n.subnet {
        kv("subnet:", s.to_string());
    }
    kv("cpus:", i.cpus.to_string());
    kv("memory:", bytes(i.memory_bytes));
    kv("disk:", bytes(i.disk_bytes));
    kv(
        "joined:",
        format!("{} ago", age(now.saturating_sub(n.record.joined_at))),
    );
    kv(
        "registered:",
        format!("{} ago", age(now.saturating_sub(n.record.registered_at))),
    );
    kv("key sha256:", n.record.key_sha256.clone());
    for (k, v) in &i.attributes {
        kv("attribute:", format!("{k}={v}"));
    }
    out
}

/// `strata cluster status`.
pub fn cluster_status(s: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster {}: etcd {}, leader {}, {}/{} node(s) Ready (answered by {})\n\n",
        s.cluster,
        if s.etcd_quorum {
            "healthy"
        } else {
            "WITHOUT QUORUM"
        },
        s.etcd_leader.as_deref().unwrap_or("none"),
        s.nodes_ready,
        s.nodes_total,
        s.answered_by
    );
    let rows: Vec<Vec<String>> = s
        .masters
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.endpoint.clone(),
                if m.healthy {
                    "healthy".into()
                } else {
                    "unhealthy".into()
                },
                if m.leader { "yes".into() } else { "no".into() },
                m.version
                    .clone()
                    .or_else(|| m.error.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "MASTER",
            "ETCD ENDPOINT",
            "HEALTH",
            "LEADER",
            "VERSION/ERROR",
        ],
        &rows,
    ));
    out
}

/// The `strata task list` table of the cluster's tasks.
pub fn task_list(tasks: &[crate::cluster::model::TaskView]) -> String {
    let mut out = format!(
        "{:<24} {:<16} {:<10} {:<15} {:>8} {:>8} {:>5}  {:<20} IMAGE\n",
        "ID", "NODE", "STATE", "ADDRESS", "PID", "RESTARTS", "EXIT", "APP:PORTS"
    );
    for t in tasks {
        let pid = t.pid.map_or("-".into(), |p| p.to_string());
        let exit = t.exit_code.map_or("-".into(), |c| c.to_string());
        let addr = t.address.map_or("-".into(), |a| a.to_string());
        let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
        let app = match (&t.app, ports.is_empty()) {
            (None, true) => "-".to_string(),
            (app, _) => format!("{}:{}", app.as_deref().unwrap_or("-"), ports.join(",")),
        };
        out.push_str(&format!(
            "{:<24} {:<16} {:<10} {:<15} {:>8} {:>8} {:>5}  {:<20} {}\n",
            t.id, t.node, t.state, addr, pid, t.restarts, exit, app, t.image
        ));
    }
    out
}
