//! PostgreSQL's planner statistics, refreshed after a large write.
//!
//! PostgreSQL plans every statement from its statistics of the tables. Autovacuum
//! refreshes them at most once a minute, and only once a tenth of a table has changed.
//! Until then an environment just imported is, to the planner, an environment of a
//! few rows. A large import followed at once by a revert (a bad release rolled back) is
//! exactly when that matters: the revert's comparison of the two versions (20,000 rows
//! at 10,000 flags) was planned as a sort spilled to disk instead of a hash, about
//! 50 ms instead of 30 (`docs/benchmarks.md`, section 3). So after a write of many items
//! the store refreshes the statistics of `revisions` itself: in the background, never
//! on a write's path, one refresh at a time, and once more if another large write
//! committed while one ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use sqlx::AnyPool;

use super::StoreObserver;

/// A write that inserts at least this many rows of `revisions` refreshes the
/// statistics. (A revert that starts a line pointing at older content writes none.)
pub(super) const REFRESH_AFTER_ROWS: u64 = 1_000;

/// No refresh is running.
const IDLE: u8 = 0;
/// A refresh is running.
const RUNNING: u8 = 1;
/// A refresh is running, and another large write committed since it started.
const AGAIN: u8 = 2;

/// The refreshes of one PostgreSQL store.
#[derive(Debug)]
pub(super) struct Statistics {
    pool: AnyPool,
    state: AtomicU8,
    observer: Option<Arc<dyn StoreObserver>>,
}

impl Statistics {
    pub(super) fn new(pool: AnyPool, observer: Option<Arc<dyn StoreObserver>>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            state: AtomicU8::new(IDLE),
            observer,
        })
    }

    /// After a committed write that inserted `rows` rows: starts a refresh when they
    /// are many, or asks the running one for another round.
    pub(super) fn after_write(self: &Arc<Self>, rows: u64) {
        if rows < REFRESH_AFTER_ROWS {
            return;
        }
        // Outside a runtime there is nothing to run it on (and nothing planned after).
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        loop {
            match self
                .state
                .compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    rt.spawn(self.clone().run());
                    return;
                }
                // The round under way may have read the table before this write: one
                // more follows it. (When that round ended just now, start one.)
                Err(RUNNING) => {
                    if self
                        .state
                        .compare_exchange(RUNNING, AGAIN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Refreshes until no large write committed during the last round.
    async fn run(self: Arc<Self>) {
        loop {
            let started = std::time::Instant::now();
            // A failure costs only the plans' quality until autovacuum's next round.
            match sqlx::raw_sql("ANALYZE revisions").execute(&self.pool).await {
                Ok(_) => {
                    if let Some(o) = &self.observer {
                        o.observe("refresh_statistics", started.elapsed());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store: refreshing PostgreSQL's statistics failed");
                }
            }
            if self
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
            self.state.store(RUNNING, Ordering::Release);
        }
    }
}
