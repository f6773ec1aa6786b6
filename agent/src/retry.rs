//! Waiting out a [`control::backoff::Backoff`] delay on the agent's runtime.

pub use control::backoff::Backoff;

/// Sleeps for the schedule's current delay and advances it.
pub async fn wait(backoff: &mut Backoff) {
    tokio::time::sleep(backoff.advance()).await;
}
