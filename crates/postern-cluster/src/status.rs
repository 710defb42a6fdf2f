//! What `postern cluster` and the admin API show: the nodes Redis knows,
//! and the leases each holds per host.

use std::collections::BTreeMap;

use redis::Value;
use serde::Serialize;

use crate::scripts::{host_of, node_of};

/// The cluster at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// This node's name.
    pub node: String,
    /// True while this node shares its limits through Redis.
    pub redis_up: bool,
    /// Nodes registered in Redis (only this one when Redis is out of
    /// reach), by name.
    pub nodes: Vec<NodeStatus>,
    /// Hosts with leases, by name.
    pub hosts: Vec<HostLeases>,
}

/// One node.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its `Node_Name`.
    pub name: String,
    /// Milliseconds until its registration expires unless renewed.
    pub expires_in_ms: u64,
    /// Leases it holds, in all.
    pub leases: u64,
}

/// One host's leases.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostLeases {
    /// The host (binding and address, as the engine names it).
    pub host: String,
    /// Leases per node.
    pub leases: BTreeMap<String, u64>,
}

impl Status {
    /// This node alone, from the leases it holds (Redis out of reach).
    pub(crate) fn local<'a>(node: &str, held: impl Iterator<Item = &'a str>) -> Status {
        let mut hosts: BTreeMap<String, u64> = BTreeMap::new();
        for host in held {
            *hosts.entry(host.to_owned()).or_default() += 1;
        }
        let total = hosts.values().sum();
        Status {
            node: node.to_owned(),
            redis_up: false,
            nodes: vec![NodeStatus {
                name: node.to_owned(),
                expires_in_ms: 0,
                leases: total,
            }],
            hosts: hosts
                .into_iter()
                .map(|(host, n)| HostLeases {
                    host,
                    leases: BTreeMap::from([(node.to_owned(), n)]),
                })
                .collect(),
        }
    }

    /// From the status script's answer (`scripts::status`).
    pub(crate) fn parse(node: &str, answer: &Value) -> Option<Status> {
        let Value::Array(items) = answer else {
            return None;
        };
        let mut items = items.iter();
        let now = int(items.next()?)?;
        let mut nodes: BTreeMap<String, NodeStatus> = BTreeMap::new();
        let Value::Array(registered) = items.next()? else {
            return None;
        };
        for pair in registered.chunks(2) {
            let [name, expiry] = pair else { continue };
            let name = text(name)?;
            let expires_in_ms = u64::try_from(int(expiry)?.saturating_sub(now)).unwrap_or(0);
            nodes.insert(
                name.clone(),
                NodeStatus {
                    name,
                    expires_in_ms,
                    leases: 0,
                },
            );
        }
        let mut hosts = Vec::new();
        while let (Some(key), Some(Value::Array(members))) = (items.next(), items.next()) {
            let key = text(key)?;
            let mut leases: BTreeMap<String, u64> = BTreeMap::new();
            for member in members {
                let member = text(member)?;
                *leases.entry(node_of(&member).to_owned()).or_default() += 1;
            }
            for (name, n) in &leases {
                if let Some(entry) = nodes.get_mut(name) {
                    entry.leases += n;
                }
            }
            hosts.push(HostLeases {
                host: host_of(&key).to_owned(),
                leases,
            });
        }
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        Some(Status {
            node: node.to_owned(),
            redis_up: true,
            nodes: nodes.into_values().collect(),
            hosts,
        })
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse::<f64>().ok().map(|f| f as i64),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}
