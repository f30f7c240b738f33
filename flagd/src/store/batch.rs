//! Writes that need no answer, sent to the database together.
//!
//! sqlx runs a SQLite connection on a thread of its own: every statement is a hand-off
//! to that thread and back, and in a virtual machine each hand-off costs more than the
//! statement. A kill switch wrote eight rows in eight hand-offs; SQLite runs several
//! statements of one text in one, so on SQLite a batch is one text, its parameters
//! numbered through. PostgreSQL cannot prepare several statements as one, so there
//! they run one after the other, as before.

use std::borrow::Cow;

use super::*;

/// One bound value of a batched statement.
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}

/// Statements whose parameters are `$1` … `$n`, each with its `n` values, run in order
/// in one transaction; the first that fails ends the batch with its error.
#[derive(Debug, Default)]
pub(super) struct Batch {
    statements: Vec<(Cow<'static, str>, Vec<Arg>)>,
}

impl Batch {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Adds a statement; `args` bind its `$1` … `$n` (a parameter may be used twice).
    pub(super) fn push(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Arg>) {
        self.statements.push((sql.into(), args));
    }

    /// Runs the statements on `conn`: on SQLite in one hand-off.
    pub(super) async fn run(self, conn: &mut AnyConnection, backend: Backend) -> StoreResult<()> {
        match backend {
            Backend::Sqlite => {
                if self.statements.is_empty() {
                    return Ok(());
                }
                let (sql, args) = self.joined();
                bind_all(sqlx::query(&sql), args).execute(conn).await?;
            }
            Backend::Postgres => {
                for (sql, args) in self.statements {
                    bind_all(sqlx::query(&sql), args)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// One text of every statement, each one's `$k` renumbered after the parameters of
    /// those before it, and every value in that order.
    fn joined(self) -> (String, Vec<Arg>) {
        let mut sql = String::new();
        let mut all = Vec::new();
        for (text, args) in self.statements {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            renumber(&text, all.len(), &mut sql);
            all.extend(args);
        }
        (sql, all)
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
        };
    }
    q
}

/// Appends `sql` to `out` with every parameter `$k` written as `$(k + offset)`. A `$`
/// not followed by a digit (a JSON path such as `'$.state'`) is left as it is.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            continue;
        }
        match rest[..digits].parse::<usize>() {
            Ok(k) => out.push_str(&(k + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (tempfile::TempDir, AnyPool) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        (dir, pool)
    }

    async fn rows(pool: &AnyPool) -> Vec<(i64, Option<String>)> {
        sqlx::query("SELECT a, b FROM t ORDER BY a")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Inserts `(a, b)` rows in one batch, then commits, in a transaction of its own.
    async fn insert_and_commit(pool: &AnyPool, rows: &[(i64, Option<&str>)]) -> StoreResult<()> {
        let tx = Tx::begin(pool.acquire().await.unwrap(), Backend::Sqlite)
            .await
            .unwrap();
        let mut b = Batch::new();
        for &(a, text) in rows {
            b.push(
                "INSERT INTO t (a, b) VALUES ($1, $2)",
                vec![a.into(), text.into()],
            );
        }
        tx.commit_after(b).await
    }

    #[tokio::test]
    async fn a_batch_and_its_commit_are_written_together_on_sqlite() {
        let (_dir, pool) = sqlite().await;
        insert_and_commit(&pool, &[(1, Some("x")), (2, None)])
            .await
            .unwrap();
        assert_eq!(rows(&pool).await, vec![(1, Some("x".into())), (2, None)]);
    }

    #[tokio::test]
    async fn a_batch_failing_part_way_commits_nothing() {
        let (_dir, pool) = sqlite().await;
        // The same key twice: the second statement fails, the COMMIT after it never runs.
        let failed = insert_and_commit(&pool, &[(1, Some("x")), (1, Some("y"))]).await;
        assert!(failed.is_err());
        assert_eq!(rows(&pool).await, vec![]);
        // The store takes writes again: the failed transaction did not stay open.
        insert_and_commit(&pool, &[(3, Some("z"))]).await.unwrap();
        assert_eq!(rows(&pool).await, vec![(3, Some("z".into()))]);
    }

    /// The BEGIN and the first read in one hand-off: the row read, and after a read
    /// that fails the connection is not left in its transaction (the store's one
    /// write lock would be held, or the next BEGIN refused).
    #[tokio::test]
    async fn a_transaction_begun_with_its_first_read_reads_or_lets_go() {
        let (_dir, pool) = sqlite().await;
        insert_and_commit(&pool, &[(1, Some("x"))]).await.unwrap();
        let conn = pool.acquire().await.unwrap();
        let (tx, row) =
            Tx::begin_reading(conn, Backend::Sqlite, "SELECT b FROM t WHERE a = $1", "1")
                .await
                .unwrap();
        assert_eq!(row.map(|r| r.get::<String, _>(0)), Some("x".to_owned()));
        tx.commit().await.unwrap();
        for _ in 0..3 {
            let conn = pool.acquire().await.unwrap();
            let failed = Tx::begin_reading(
                conn,
                Backend::Sqlite,
                "SELECT * FROM missing WHERE a = $1",
                "1",
            )
            .await;
            assert!(failed.is_err());
        }
        insert_and_commit(&pool, &[(2, None)]).await.unwrap();
        assert_eq!(rows(&pool).await, vec![(1, Some("x".into())), (2, None)]);
    }

    #[test]
    fn parameters_are_numbered_through_the_batch() {
        let mut b = Batch::new();
        b.push(
            "INSERT INTO t (a, b) VALUES ($1, $2)",
            vec![1.into(), "x".into()],
        );
        b.push(
            "UPDATE t SET a = $1 WHERE b = $2 AND json_extract(c, '$.state') = $1",
            vec![2.into(), "y".into()],
        );
        b.push(
            "DELETE FROM t WHERE a = $10",
            (0..10).map(|i| Arg::from(i64::from(i))).collect(),
        );
        let (sql, args) = b.joined();
        assert_eq!(
            sql,
            "INSERT INTO t (a, b) VALUES ($1, $2);\n\
             UPDATE t SET a = $3 WHERE b = $4 AND json_extract(c, '$.state') = $3;\n\
             DELETE FROM t WHERE a = $14"
        );
        assert_eq!(args.len(), 14);
    }
}
