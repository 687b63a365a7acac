//! Waiting for a deadline that may not be set: what a `select!` loop with optional deadlines needs.

use tokio::time::Instant;

/// Resolves at `deadline`; never, without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
