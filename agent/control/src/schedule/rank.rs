//! The order of the nodes that may take an instance: a score, higher
//! first (ties go to the node whose name sorts first).

use super::{NodeView, Resources, Strategy};

/// A node's score for one instance: integers, so that equal nodes tie
/// exactly.
pub type Score = (i64, i64);

/// Bin-packing: how full the node would be with the instance (the mean of
/// its cpu and memory shares, in millionths). Spreading: fewest instances
/// of the app first, then the emptiest node.
pub fn score(
    strategy: Strategy,
    node: &NodeView,
    used: &Resources,
    want: Resources,
    instances: Option<&usize>,
) -> Score {
    let share = |used: u64, want: u64, total: u64| -> i64 {
        if total == 0 {
            return 1_000_000;
        }
        ((used + want).min(total) * 1_000_000 / total) as i64
    };
    let a = node.allocatable;
    let fullness = (share(used.cpu_milli, want.cpu_milli, a.cpu_milli)
        + share(used.mem_mib, want.mem_mib, a.mem_mib))
        / 2;
    match strategy {
        Strategy::BinPack => (fullness, 0),
        Strategy::Spread => (-(instances.copied().unwrap_or(0) as i64), -fullness),
    }
}
