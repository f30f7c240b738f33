//! What replicas on one store tell each other beside the flag sets: the SDK instances
//! each serves, instances an operator forgot, tokens revoked.

use super::*;

/// One replica's report of an environment's fleet.
#[derive(Clone, Debug)]
pub struct FleetReport {
    /// The replica that wrote it.
    pub replica: String,
    /// Its instances, as the replica serialized them (a JSON array).
    pub instances: String,
    /// When it was last written (ms).
    pub reported_at: i64,
}

impl Store {
    /// Writes (or refreshes) this replica's report of an environment's fleet.
    pub async fn report_fleet(
        &self,
        replica: &str,
        environment: &str,
        instances: &str,
    ) -> StoreResult<()> {
        let _timed = self.timed("report_fleet");
        let mut conn = self.acquire().await?;
        sqlx::query(
            "INSERT INTO fleet_reports (replica, environment, instances, reported_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (replica, environment) DO UPDATE SET instances = excluded.instances, reported_at = excluded.reported_at",
        )
        .bind(replica)
        .bind(environment)
        .bind(instances)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Every other replica's report of an environment's fleet written in the last
    /// `within_ms`; older ones are deleted (their replicas are long gone).
    pub async fn fleet_reports(
        &self,
        environment: &str,
        except_replica: &str,
        within_ms: i64,
    ) -> StoreResult<Vec<FleetReport>> {
        let _timed = self.timed("read_fleet_reports");
        let since = now_ms().saturating_sub(within_ms);
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT replica, instances, reported_at FROM fleet_reports \
             WHERE environment = $1 AND replica <> $2 AND reported_at >= $3",
        )
        .bind(environment)
        .bind(except_replica)
        .bind(since)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        let reports = rows
            .iter()
            .map(|r| {
                Ok(FleetReport {
                    replica: r.try_get("replica")?,
                    instances: r.try_get("instances")?,
                    reported_at: r.try_get("reported_at")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(reports)
    }

    /// Deletes reports and forgets older than `older_than_ms`.
    pub async fn prune_fleet_reports(&self, older_than_ms: i64) -> StoreResult<()> {
        let before = now_ms().saturating_sub(older_than_ms);
        let mut conn = self.acquire().await?;
        sqlx::query("DELETE FROM fleet_reports WHERE reported_at < $1")
            .bind(before)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM fleet_forgets WHERE forgotten_at < $1")
            .bind(before)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Records that an operator forgot an instance, for every replica.
    pub async fn forget_instance(&self, environment: &str, instance: &str) -> StoreResult<()> {
        let mut conn = self.acquire().await?;
        sqlx::query(
            "INSERT INTO fleet_forgets (environment, instance, forgotten_at) VALUES ($1, $2, $3) \
             ON CONFLICT (environment, instance) DO UPDATE SET forgotten_at = excluded.forgotten_at",
        )
        .bind(environment)
        .bind(instance)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The instances of an environment forgotten, and when (ms).
    pub async fn forgotten_instances(
        &self,
        environment: &str,
    ) -> StoreResult<HashMap<String, i64>> {
        let mut conn = self.read().await?;
        let rows =
            sqlx::query("SELECT instance, forgotten_at FROM fleet_forgets WHERE environment = $1")
                .bind(environment)
                .fetch_all(&mut *conn)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("instance")?, r.try_get("forgotten_at")?)))
            .collect()
    }

    /// Tokens and SDK keys revoked at or after `since` (ms), with when: another
    /// replica's revocation closes this replica's streams too.
    pub async fn revoked_since(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT id, revoked_at FROM tokens WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("revoked_at")?)))
            .collect()
    }

    /// When a version was committed (ms), and the version it restored when it is a
    /// revert of the whole set (a one-flag restore also names the version it took the
    /// flag from, and is not one): what another replica needs to send its SDKs the
    /// version, as the compact restore frame when it can.
    pub async fn version_facts(
        &self,
        environment: &str,
        version: u64,
    ) -> StoreResult<(Option<i64>, Option<u64>)> {
        let mut conn = self.read().await?;
        let Some(row) = sqlx::query(
            "SELECT created_at, reverted_to FROM versions WHERE env = $1 AND version = $2",
        )
        .bind(environment)
        .bind(to_i64(version))
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok((None, None));
        };
        let at: i64 = row.try_get(0)?;
        let Some(k) = row.try_get::<Option<i64>, _>(1)? else {
            return Ok((Some(at), None));
        };
        // The version's audit entry, written in its transaction, is among the newest.
        let action: Option<String> = sqlx::query(
            "SELECT action FROM audit WHERE env = $1 AND version = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(environment)
        .bind(to_i64(version))
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        Ok((
            Some(at),
            (action.as_deref() == Some("flagset.revert")).then(|| to_u64(k)),
        ))
    }

    /// Waits for this process's writes to the store to pause, and holds them off while
    /// the guard lives (a replica reading what another replica committed).
    pub async fn hold_writes(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().await
    }
}
