//! A write transaction that never outlives a failed COMMIT.

use super::*;

/// A write transaction on a connection of its own. A connection whose transaction did
/// not end cleanly (its COMMIT or ROLLBACK failed, or the write was abandoned on an
/// error) is closed, never returned to the pool: SQLite keeps a transaction open when
/// its COMMIT fails (a full disk), and a pooled connection with an open transaction
/// turns every later write on it into a savepoint of a transaction that never commits,
/// acknowledged and then lost.
pub(crate) struct Tx {
    conn: sqlx::pool::PoolConnection<Any>,
    open: bool,
    backend: Backend,
}

impl Tx {
    pub(super) async fn begin(
        mut conn: sqlx::pool::PoolConnection<Any>,
        backend: Backend,
    ) -> Result<Self, sqlx::Error> {
        // SQLite: take the write lock now, not at the first write (no upgrade deadlock).
        let sql = match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if let Err(e) = sqlx::query(sql).execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(e);
        }
        Ok(Self {
            conn,
            open: true,
            backend,
        })
    }

    /// Begins, then reads the transaction's first row: `sql` with `$1` bound to `arg`.
    /// On SQLite the `BEGIN IMMEDIATE` and the read go in one hand-off to the
    /// connection's thread. A failure of either closes the connection, as in
    /// [`Tx::begin`].
    pub(super) async fn begin_reading(
        conn: sqlx::pool::PoolConnection<Any>,
        backend: Backend,
        sql: &str,
        arg: &str,
    ) -> StoreResult<(Self, Option<AnyRow>)> {
        match backend {
            Backend::Sqlite => {
                // Open from the start: a read failing after the BEGIN took effect must
                // not return the connection to the pool inside the transaction.
                let mut tx = Self {
                    conn,
                    open: true,
                    backend,
                };
                let text = format!("BEGIN IMMEDIATE;\n{sql}");
                // Not `fetch_optional`: through `Any` it takes the first result only,
                // which is the BEGIN's.
                let row = sqlx::query(&text)
                    .bind(arg)
                    .fetch_all(&mut *tx.conn)
                    .await?
                    .into_iter()
                    .next();
                Ok((tx, row))
            }
            Backend::Postgres => {
                let mut tx = Self::begin(conn, backend).await?;
                let row = sqlx::query(sql)
                    .bind(arg)
                    .fetch_optional(&mut *tx.conn)
                    .await?;
                Ok((tx, row))
            }
        }
    }

    /// Rolls back; the connection goes back to the pool only when that worked.
    pub(super) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }

    pub(super) fn backend(&self) -> Backend {
        self.backend
    }

    /// Commits; only an `Ok` means the write is durable.
    pub(super) async fn commit(self) -> StoreResult<()> {
        self.commit_after(Batch::new()).await
    }

    /// Runs `last` (writes needing no answer), then commits: on SQLite in one hand-off
    /// to the connection's thread. Only an `Ok` means the write is durable; when a
    /// statement of `last` fails, nothing is committed.
    pub(super) async fn commit_after(mut self, mut last: Batch) -> StoreResult<()> {
        last.push("COMMIT", Vec::new());
        match last.run(&mut self.conn, self.backend).await {
            Ok(_) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                // Best effort; the connection is closed on drop either way.
                let _ = sqlx::query("ROLLBACK").execute(&mut *self.conn).await;
                Err(e)
            }
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // Closing discards the open transaction (SQLite rolls back, PostgreSQL
            // aborts it when the session ends).
            self.conn.close_on_drop();
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}
