//! The record set of the cluster zone and the pure answer to a question.
//!
//! Names: a task `web-1` of app `web` with address `10.200.1.2` and port
//! 8080 gives
//! - `web-1.<zone>` A `10.200.1.2` and `web.<zone>` A `10.200.1.2` (an app
//!   name has one A record per running task);
//! - `web.<zone>` and `_web._tcp.<zone>` SRV `0 0 8080 web-1.<zone>`, with
//!   the target's A record in the additional section;
//! - for a port named `http`, `_http._web._tcp.<zone>` SRV of that port
//!   alone.
//!
//! VIPs (`control::vip::names`): `<name>.l4lb.<zone>` A the named VIP's
//! address, `<app>.vip.<zone>` A every VIP address of the app.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// Time to live of every answer: short, so that clients follow tasks
/// starting and stopping.
pub const TTL: u32 = 1;

/// One running task as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// The app the task belongs to, if any.
    pub app: Option<String>,
    pub addr: Ipv4Addr,
    /// TCP ports the task serves, for SRV.
    pub ports: Vec<u16>,
    /// Its named TCP ports, for `_<name>._<app>._tcp` SRV.
    pub named: BTreeMap<String, u16>,
}

/// All tasks of the cluster, by task name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSet {
    pub tasks: BTreeMap<String, TaskRecord>,
    /// VIP names (`web.l4lb`, `web-shop.vip`) and their addresses.
    pub vips: BTreeMap<String, Vec<Ipv4Addr>>,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl RecordSet {
    /// Answers `name`/`rtype` for `zone`; `name` must be inside `zone`.
    pub fn answer(&self, zone: &LowerName, name: &LowerName, rtype: RecordType) -> Answer {
        let full: Name = name.clone().into();
        let zone_labels = Name::from(zone.clone()).num_labels();
        let labels: Vec<String> = full
            .iter()
            .take(usize::from(full.num_labels().saturating_sub(zone_labels)))
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect();
        let key = match labels.as_slice() {
            // The zone apex exists but holds nothing we serve.
            [] => {
                return Answer {
                    code: ResponseCode::NoError,
                    answers: vec![],
                    additionals: vec![],
                };
            }
            [one] => Some((one.clone(), false, None)),
            [_, kind] if kind == "l4lb" || kind == "vip" => {
                let found = self.vips.get(&labels.join("."));
                let answers = match (found, rtype) {
                    (Some(addrs), RecordType::A) => addrs
                        .iter()
                        .map(|a| Record::from_rdata(full.clone(), TTL, RData::A(A(*a))))
                        .collect(),
                    _ => vec![],
                };
                return Answer {
                    code: if found.is_some() {
                        ResponseCode::NoError
                    } else {
                        ResponseCode::NXDomain
                    },
                    answers,
                    additionals: vec![],
                };
            }
            [service, proto] if proto == "_tcp" => service
                .strip_prefix('_')
                .map(|s| (s.to_string(), true, None)),
            [port, service, proto] if proto == "_tcp" => {
                match (port.strip_prefix('_'), service.strip_prefix('_')) {
                    (Some(p), Some(s)) => Some((s.to_string(), true, Some(p.to_string()))),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((key, srv_only, port_name)) = key else {
            return Answer {
                code: ResponseCode::NXDomain,
                answers: vec![],
                additionals: vec![],
            };
        };
        let matching: Vec<(&String, &TaskRecord)> = self
            .tasks
            .iter()
            .filter(|(t, r)| **t == key || r.app.as_deref() == Some(key.as_str()))
            .filter(|(_, r)| port_name.as_ref().is_none_or(|p| r.named.contains_key(p)))
            .collect();
        if matching.is_empty() {
            return Answer {
                code: ResponseCode::NXDomain,
                answers: vec![],
                additionals: vec![],
            };
        }
        let zone_name: Name = zone.clone().into();
        let task_name = |t: &str| Name::from_ascii(t).and_then(|n| n.append_domain(&zone_name));
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match rtype {
            RecordType::A if !srv_only => {
                let mut addrs: Vec<Ipv4Addr> = matching.iter().map(|(_, r)| r.addr).collect();
                addrs.sort();
                addrs.dedup();
                answers.extend(
                    addrs
                        .into_iter()
                        .map(|a| Record::from_rdata(full.clone(), TTL, RData::A(A(a)))),
                );
            }
            RecordType::SRV => {
                for (t, r) in &matching {
                    let Ok(target) = task_name(t) else { continue };
                    let ports: Vec<u16> = match &port_name {
                        Some(name) => r.named.get(name).copied().into_iter().collect(),
                        None => r.ports.clone(),
                    };
                    for p in &ports {
                        answers.push(Record::from_rdata(
                            full.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, 0, *p, target.clone())),
                        ));
                    }
                    if !ports.is_empty() {
                        additionals.push(Record::from_rdata(target, TTL, RData::A(A(r.addr))));
                    }
                }
            }
            _ => {}
        }
        Answer {
            code: ResponseCode::NoError,
            answers,
            additionals,
        }
    }
}

/// The handle the agent holds: cloned into the DNS server, updated as tasks
/// start and stop; every query reads the current set.
#[derive(Debug, Clone, Default)]
pub struct Records(Arc<RwLock<RecordSet>>);

impl Records {
    pub fn new() -> Records {
        Records::default()
    }

    /// Adds or replaces the task `task`.
    pub fn upsert(&self, task: &str, record: TaskRecord) {
        self.write().tasks.insert(task.to_ascii_lowercase(), record);
    }

    /// Removes the task `task`; returns whether it was there.
    pub fn remove(&self, task: &str) -> bool {
        self.write()
            .tasks
            .remove(&task.to_ascii_lowercase())
            .is_some()
    }

    /// Replaces the whole set (after a full resync from cluster state).
    pub fn replace(&self, set: RecordSet) {
        *self.write() = set;
    }

    /// A copy of the current set.
    pub fn snapshot(&self) -> RecordSet {
        self.read().clone()
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, RecordSet> {
        // A panic while holding the lock leaves a consistent map behind.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RecordSet> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn set() -> RecordSet {
        let mut s = RecordSet::default();
        let task = |app: &str, ip: &str, ports: &[u16]| TaskRecord {
            app: Some(app.into()),
            addr: ip.parse().expect("ip"),
            ports: ports.to_vec(),
            named: Default::default(),
        };
        let mut web = |name: &str, ip: &str| {
            let mut t = task("web", ip, &[8080, 9090]);
            t.named = [("http".to_string(), 8080), ("admin".to_string(), 9090)].into();
            s.tasks.insert(name.into(), t);
        };
        web("web-1", "10.200.1.2");
        web("web-2", "10.200.2.2");
        s.tasks.insert("db-1".into(), task("db", "10.200.1.3", &[]));
        s.vips
            .insert("web.l4lb".into(), vec!["198.18.0.2".parse().expect("ip")]);
        s.vips.insert(
            "web-shop.vip".into(),
            vec![
                "198.18.0.2".parse().expect("ip"),
                "198.18.9.9".parse().expect("ip"),
            ],
        );
        s
    }

    fn check(name: &str, rtype: RecordType, expected: Expect) {
        let zone = LowerName::from(Name::from_ascii("strata.internal.").expect("zone"));
        let name = LowerName::from(Name::from_ascii(name).expect("name"));
        let a = set().answer(&zone, &name, rtype);
        let mut out = vec![format!("{}", a.code)];
        out.extend(a.answers.iter().map(|r| format!("answer {r}")));
        out.extend(a.additionals.iter().map(|r| format!("additional {r}")));
        expected.assert_eq(&out.join("\n"));
    }

    #[test]
    fn answers() {
        check(
            "web-1.strata.internal.",
            RecordType::A,
            expect![[r#"
            No Error
            answer web-1.strata.internal. 1 IN A 10.200.1.2"#]],
        );
        check(
            "WEB.strata.internal.",
            RecordType::A,
            expect![[r#"
            No Error
            answer web.strata.internal. 1 IN A 10.200.1.2
            answer web.strata.internal. 1 IN A 10.200.2.2"#]],
        );
        check(
            "web.strata.internal.",
            RecordType::SRV,
            expect![[r#"
                No Error
                answer web.strata.internal. 1 IN SRV 0 0 8080 web-1.strata.internal.
                answer web.strata.internal. 1 IN SRV 0 0 9090 web-1.strata.internal.
                answer web.strata.internal. 1 IN SRV 0 0 8080 web-2.strata.internal.
                answer web.strata.internal. 1 IN SRV 0 0 9090 web-2.strata.internal.
                additional web-1.strata.internal. 1 IN A 10.200.1.2
                additional web-2.strata.internal. 1 IN A 10.200.2.2"#]],
        );
        check(
            "_web._tcp.strata.internal.",
            RecordType::SRV,
            expect![[r#"
                No Error
                answer _web._tcp.strata.internal. 1 IN SRV 0 0 8080 web-1.strata.internal.
                answer _web._tcp.strata.internal. 1 IN SRV 0 0 9090 web-1.strata.internal.
                answer _web._tcp.strata.internal. 1 IN SRV 0 0 8080 web-2.strata.internal.
                answer _web._tcp.strata.internal. 1 IN SRV 0 0 9090 web-2.strata.internal.
                additional web-1.strata.internal. 1 IN A 10.200.1.2
                additional web-2.strata.internal. 1 IN A 10.200.2.2"#]],
        );
        check(
            "_web._tcp.strata.internal.",
            RecordType::A,
            expect!["No Error"],
        );
        check(
            "_admin._web._tcp.strata.internal.",
            RecordType::SRV,
            expect![[r#"
                No Error
                answer _admin._web._tcp.strata.internal. 1 IN SRV 0 0 9090 web-1.strata.internal.
                answer _admin._web._tcp.strata.internal. 1 IN SRV 0 0 9090 web-2.strata.internal.
                additional web-1.strata.internal. 1 IN A 10.200.1.2
                additional web-2.strata.internal. 1 IN A 10.200.2.2"#]],
        );
        check(
            "_HTTP._web._tcp.strata.internal.",
            RecordType::SRV,
            expect![[r#"
                No Error
                answer _http._web._tcp.strata.internal. 1 IN SRV 0 0 8080 web-1.strata.internal.
                answer _http._web._tcp.strata.internal. 1 IN SRV 0 0 8080 web-2.strata.internal.
                additional web-1.strata.internal. 1 IN A 10.200.1.2
                additional web-2.strata.internal. 1 IN A 10.200.2.2"#]],
        );
        check(
            "_grpc._web._tcp.strata.internal.",
            RecordType::SRV,
            expect!["Non-Existent Domain"],
        );
        check(
            "_http.web._tcp.strata.internal.",
            RecordType::SRV,
            expect!["Non-Existent Domain"],
        );
        check("db.strata.internal.", RecordType::SRV, expect!["No Error"]);
        check("db.strata.internal.", RecordType::AAAA, expect!["No Error"]);
        check(
            "nope.strata.internal.",
            RecordType::A,
            expect!["Non-Existent Domain"],
        );
        check(
            "a.b.strata.internal.",
            RecordType::A,
            expect!["Non-Existent Domain"],
        );
        check("strata.internal.", RecordType::SOA, expect!["No Error"]);
        check(
            "web.l4lb.strata.internal.",
            RecordType::A,
            expect![[r#"
                No Error
                answer web.l4lb.strata.internal. 1 IN A 198.18.0.2"#]],
        );
        check(
            "Web-Shop.vip.strata.internal.",
            RecordType::A,
            expect![[r#"
                No Error
                answer web-shop.vip.strata.internal. 1 IN A 198.18.0.2
                answer web-shop.vip.strata.internal. 1 IN A 198.18.9.9"#]],
        );
        check(
            "web.l4lb.strata.internal.",
            RecordType::AAAA,
            expect!["No Error"],
        );
        check(
            "db.l4lb.strata.internal.",
            RecordType::A,
            expect!["Non-Existent Domain"],
        );
    }

    #[test]
    fn handle_follows_updates() {
        let r = Records::new();
        r.upsert(
            "Web-1",
            TaskRecord {
                app: None,
                addr: "10.200.1.2".parse().expect("ip"),
                ports: vec![],
                named: Default::default(),
            },
        );
        assert_eq!(r.snapshot().tasks.keys().collect::<Vec<_>>(), ["web-1"]);
        assert!(r.remove("web-1"));
        assert!(!r.remove("web-1"));
    }
}
