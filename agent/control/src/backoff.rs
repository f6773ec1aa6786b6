//! Retry delays that double from a first delay up to a cap: the one
//! schedule every retry loop of the agent follows (joining, registering,
//! waiting for etcd's quorum, opening the node's network, binding its
//! resolver, the master's shared watch). Pure: the caller sleeps.

use std::time::Duration;

/// The next delay of a doubling retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A schedule starting at `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            next: first,
            max,
        }
    }

    /// The delay the next [`Backoff::advance`] gives.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// The delay to wait now; the following one doubles (up to the cap).
    pub fn advance(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let delays: Vec<u128> = (0..5).map(|_| b.advance().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(500));
    }
}
