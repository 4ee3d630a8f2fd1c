//! The names of the indexes on the per-replicable tables that more than the DDL refers to:
//! `#[replicable]` creates them under these names, and geo-diesel's claims on SQLite name the
//! partial index that holds exactly their candidates (`INDEXED BY`).

/// The longest SQL identifier either backend keeps (PostgreSQL's `NAMEDATALEN - 1`).
pub const MAX_IDENT_LEN: usize = 63;

/// The partial index of rows whose verification is `pending` (on the registry: of synced
/// rows).
pub const PENDING_VERIFICATION: &str = "pending_verification";
/// The partial index of rows whose verification `failed` (on the registry: of synced rows).
pub const FAILED_VERIFICATION: &str = "failed_verification";
/// The registry's partial index of synced rows needing verification (`pending` or `failed`).
pub const NEEDS_VERIFICATION: &str = "needs_verification";

/// An index name `index_<table>_<suffix>`, cut to [`MAX_IDENT_LEN`] bytes with a stable
/// 8-hex-digit hash of the full name appended when it is longer.
pub fn name(table: &str, suffix: &str) -> String {
    let full = format!("index_{table}_{suffix}");
    if full.len() <= MAX_IDENT_LEN {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(&full));
    // Identifiers are validated ASCII, so any byte offset is a char boundary; stay safe.
    let mut cut = MAX_IDENT_LEN - hash.len() - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &full[..cut])
}

/// A stable 32-bit FNV-1a hash (the same on every platform and compiler version).
fn fnv1a(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_cut_stably() {
        assert_eq!(
            name("widget_registry", "on_state"),
            "index_widget_registry_on_state"
        );
        let long = "a".repeat(60);
        let cut = name(&long, "pending_verification");
        assert_eq!(cut.len(), 63);
        assert!(cut.starts_with("index_aaaa"));
        assert_eq!(cut, name(&long, "pending_verification"));
        assert_ne!(cut, name(&long, "failed_verification"));
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
    }
}
