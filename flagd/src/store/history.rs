//! Questions about the history beyond one version's record.

use super::*;

impl Store {
    /// The versions after `after` that changed any of `flags`, as (flag, version), oldest
    /// first: what an undo of `after` would interact with.
    pub async fn flag_versions_after(
        &self,
        env: &str,
        flags: &[String],
        after: u64,
    ) -> StoreResult<Vec<(String, u64)>> {
        if flags.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.read().await?;
        let mut out = Vec::new();
        for flag in flags {
            let rows = sqlx::query(
                "SELECT version FROM version_flags WHERE env = $1 AND flag_key = $2 AND version > $3 ORDER BY version",
            )
            .bind(env)
            .bind(flag)
            .bind(to_i64(after))
            .fetch_all(&mut *conn)
            .await?;
            for r in rows {
                out.push((flag.clone(), to_u64(r.try_get(0)?)));
            }
        }
        Ok(out)
    }
}
