//! Where the log cursor stands: its position and open gaps as stored in the tracking database
//! (`geo_event_log_states`, `geo_event_log_gaps`).

use diesel::prelude::*;

use crate::db::{AsDbConn, with_conn};

/// The cursor's position and open gaps as stored in the tracking database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CursorState {
    /// The last event id processed (0 before the first event).
    pub last_event_id: i64,
    /// Event ids skipped so far and still awaited.
    pub gaps: Vec<i64>,
}

impl CursorState {
    /// GitLab's `cursor_last_event_id`: the lowest open gap minus one, or the last processed id.
    pub fn safe_position(&self) -> i64 {
        self.gaps
            .first()
            .map_or(self.last_event_id, |g| (g - 1).min(self.last_event_id))
    }
}

/// Reads the cursor position and gaps.
pub fn load_state(conn: &mut impl AsDbConn) -> Result<CursorState, diesel::result::Error> {
    use crate::schema::{geo_event_log_gaps as gaps, geo_event_log_states as states};
    let pos: Option<i64> = with_conn!(conn, c => states::table
        .find(0i16)
        .select(states::event_id)
        .first(c)
        .optional()?);
    let gaps: Vec<i64> = with_conn!(conn, c => gaps::table
        .select(gaps::event_id)
        .order(gaps::event_id)
        .load(c)?);
    Ok(CursorState {
        last_event_id: pos.unwrap_or(0),
        gaps,
    })
}
