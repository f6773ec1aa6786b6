//! The one long-poll follower: asks a watch route for what changed after
//! the last revision it saw, hands every answer over, and after a failure
//! starts over with the whole state (revision 0) from whichever master
//! answers. The node list (`cluster::network`) and a node's assignments
//! (`cluster::assignments`) follow their watches through it, and so do the
//! cluster bench's simulated agents.

use std::future::Future;
use std::time::Duration;

use control::model::{AssignmentWatch, NodeWatch};

use super::client::{ApiClient, ClientError};

/// A watch route's answer.
pub trait LongPoll: Sized {
    /// What the log calls it.
    const WHAT: &'static str;
    /// The revision to ask after next time.
    fn revision(&self) -> i64;
    /// Asks the route for what changed after `after` (0: everything now).
    fn fetch(
        client: &ApiClient,
        after: i64,
    ) -> impl Future<Output = Result<Self, ClientError>> + Send;
}

impl LongPoll for NodeWatch {
    const WHAT: &'static str = "overlay: the node list";
    fn revision(&self) -> i64 {
        self.revision
    }
    fn fetch(
        client: &ApiClient,
        after: i64,
    ) -> impl Future<Output = Result<Self, ClientError>> + Send {
        client.watch_nodes(after)
    }
}

impl LongPoll for AssignmentWatch {
    const WHAT: &'static str = "tasks: the assignment watch";
    fn revision(&self) -> i64 {
        self.revision
    }
    fn fetch(
        client: &ApiClient,
        after: i64,
    ) -> impl Future<Output = Result<Self, ClientError>> + Send {
        client.watch_assignments(after)
    }
}

/// Follows `W`'s route from `revision` on, handing every answer to `on`;
/// waits `retry` after a failure. Logs a failure when it starts or its
/// text changes, and the recovery. Never returns.
pub async fn follow<W: LongPoll>(
    client: &ApiClient,
    mut revision: i64,
    retry: Duration,
    mut on: impl FnMut(W),
) {
    let mut last_error = String::new();
    loop {
        match W::fetch(client, revision).await {
            Ok(answer) => {
                if !last_error.is_empty() {
                    tracing::info!("{} answers again", W::WHAT);
                    last_error.clear();
                }
                revision = answer.revision();
                on(answer);
            }
            Err(e) => {
                let m = e.to_string();
                if m != last_error {
                    tracing::warn!("{}: cannot follow it, retrying: {m}", W::WHAT);
                    last_error = m;
                }
                revision = 0;
                tokio::time::sleep(retry).await;
            }
        }
    }
}
