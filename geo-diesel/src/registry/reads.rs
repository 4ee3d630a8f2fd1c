//! Reads: tracked ids, counts by state, stored blob paths.

use super::*;

impl Registry {
    /// The model ids tracked in `[from, to]`, ascending.
    pub fn tracked_ids(
        &self,
        conn: &mut impl AsDbConn,
        from: i64,
        to: i64,
    ) -> Result<Vec<i64>, RegistryError> {
        let k = self.table.key;
        let mut sql = Sql::new();
        sql.push("SELECT ")
            .ident(k)
            .push(" AS id FROM ")
            .ident(self.table.name);
        sql.push(" WHERE ")
            .ident(k)
            .push(" BETWEEN ")
            .bind_i64(from);
        sql.push(" AND ").bind_i64(to).push(" ORDER BY ").ident(k);
        let rows: Vec<IdRow> = sql.load(conn).map_err(self.err("reading tracked ids"))?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// The largest tracked model id.
    pub fn max_tracked_id(&self, conn: &mut impl AsDbConn) -> Result<Option<i64>, RegistryError> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
            n: Option<i64>,
        }
        let mut sql = Sql::new();
        sql.push("SELECT MAX(")
            .ident(self.table.key)
            .push(") AS n FROM ");
        sql.ident(self.table.name);
        let rows: Vec<Row> = sql.load(conn).map_err(self.err("reading the max id"))?;
        Ok(rows.first().and_then(|r| r.n))
    }

    /// Row counts grouped by `(state, verification_state)` (one grouped query), as
    /// [`geo_core::status::ReplicableStatus::secondary`] takes them.
    pub fn state_groups(
        &self,
        conn: &mut impl AsDbConn,
    ) -> Result<Vec<(i16, i16, u64)>, RegistryError> {
        Ok(self
            .groups(conn)?
            .into_iter()
            .map(|g| (g.state, g.verification_state, g.n.max(0) as u64))
            .collect())
    }

    fn groups(&self, conn: &mut impl AsDbConn) -> Result<Vec<Group>, RegistryError> {
        let mut sql = Sql::new();
        let (state, vstate) = (Column::State.name(), Column::VerificationState.name());
        sql.push("SELECT ")
            .ident(state)
            .push(" AS state, ")
            .ident(vstate);
        sql.push(" AS verification_state, CAST(SUM(CASE WHEN ");
        sql.ident(Column::MissingOnPrimary.name());
        sql.push(" THEN 1 ELSE 0 END) AS BIGINT) AS missing, CAST(COUNT(*) AS BIGINT) AS n FROM ");
        sql.ident(self.table.name).push(" GROUP BY ").ident(state);
        sql.push(", ").ident(vstate);
        sql.load(conn).map_err(self.err("counting"))
    }

    /// Counts this registry's rows by state.
    pub fn counts(&self, conn: &mut impl AsDbConn) -> Result<RegistryCounts, RegistryError> {
        let mut out = RegistryCounts::default();
        for g in self.groups(conn)? {
            let (Ok(state), Ok(vstate)) = (
                ReplicationState::from_i16(g.state),
                VerificationState::from_i16(g.verification_state),
            ) else {
                out.registry += g.n;
                continue;
            };
            out.registry += g.n;
            out.missing_on_primary += g.missing;
            match state {
                ReplicationState::Pending => out.pending += g.n,
                ReplicationState::Started => out.started += g.n,
                ReplicationState::Synced => out.synced += g.n,
                ReplicationState::Failed => out.failed += g.n,
            }
            if vstate != VerificationState::Disabled {
                out.verification_total += g.n;
            }
            if state == ReplicationState::Synced && vstate == VerificationState::Succeeded {
                out.verified += g.n;
            }
            if vstate == VerificationState::Failed {
                out.verification_failed += g.n;
            }
        }
        Ok(out)
    }

    /// The stored blob paths of `ids` (rows without one are left out).
    pub fn blob_paths(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
    ) -> Result<Vec<(i64, String)>, RegistryError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(crate::sql::CHUNK) {
            let mut sql = Sql::new();
            sql.push("SELECT ")
                .ident(self.table.key)
                .push(" AS id, ")
                .ident(Column::BlobPath.name())
                .push(" AS path FROM ");
            sql.ident(self.table.name)
                .push(" WHERE ")
                .ident(self.table.key);
            sql.push(" IN (").ints(chunk.iter().copied());
            sql.push(") AND ")
                .ident(Column::BlobPath.name())
                .push(" IS NOT NULL");
            let rows: Vec<IdPathRow> = sql.load(conn).map_err(self.err("reading blob paths"))?;
            out.extend(rows.into_iter().map(|r| (r.id, r.path)));
        }
        Ok(out)
    }
}

#[derive(QueryableByName)]
struct Group {
    #[diesel(sql_type = SmallInt)]
    state: i16,
    #[diesel(sql_type = SmallInt)]
    verification_state: i16,
    #[diesel(sql_type = BigInt)]
    missing: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}
