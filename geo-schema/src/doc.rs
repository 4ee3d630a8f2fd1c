//! Markdown column tables rendered from the column list, and the marker comments that hold them
//! in `docs/SCHEMA.md` (the test `tests/schema_doc.rs` fails when the page drifts).

use crate::{Column, ColumnDef};

/// One row of a rendered column table. Every cell is markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The column cell, e.g. `` `state` ``.
    pub column: String,
    /// The type cell, e.g. `SmallInt`.
    pub ty: String,
    /// Whether the column may be `NULL`.
    pub nullable: bool,
    /// The default cell (empty without a default).
    pub default: String,
    /// What the column holds.
    pub doc: String,
}

impl From<ColumnDef> for Row {
    fn from(def: ColumnDef) -> Row {
        Row {
            column: format!("`{}`", def.column.name()),
            ty: def.ty.label().to_owned(),
            nullable: def.nullable,
            default: def.default.label().to_owned(),
            doc: def.doc.to_owned(),
        }
    }
}

/// A markdown table `| column | type | null | default | meaning |` of `rows`, one line each,
/// ending with a newline.
pub fn markdown_table(rows: impl IntoIterator<Item = Row>) -> String {
    let mut out =
        String::from("| column | type | null | default | meaning |\n|---|---|---|---|---|\n");
    for row in rows {
        let null = if row.nullable { "yes" } else { "no" };
        let cells = [row.column.as_str(), &row.ty, null, &row.default, &row.doc];
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// The markdown table of `columns` with their registry docs ([`ColumnDef::doc`]).
pub fn column_table(columns: &[Column]) -> String {
    markdown_table(columns.iter().map(|c| Row::from(c.def())))
}

/// The line that opens the generated block `name`.
pub fn begin_marker(name: &str) -> String {
    format!(
        "<!-- geo-schema:{name} begin (rendered from the geo-schema crate; edit there, then run \
         `GEO_BLESS=1 cargo test -p geo-schema`) -->"
    )
}

/// The line that closes the generated block `name`.
pub fn end_marker(name: &str) -> String {
    format!("<!-- geo-schema:{name} end -->")
}

/// `page` with the lines between the markers of block `name` replaced by `content` (which ends
/// with a newline), or why not: a marker is missing, repeated or out of order.
pub fn replace_block(page: &str, name: &str, content: &str) -> Result<String, String> {
    let (begin, end) = (begin_marker(name), end_marker(name));
    let find_line = |marker: &str| {
        let mut found = page.match_indices(marker).filter(|(at, _)| {
            (*at == 0 || page[..*at].ends_with('\n')) && page[at + marker.len()..].starts_with('\n')
        });
        match (found.next(), found.next()) {
            (Some((at, _)), None) => Ok(at),
            (None, _) => Err(format!("the line `{marker}` is missing")),
            (Some(_), Some(_)) => Err(format!("the line `{marker}` appears more than once")),
        }
    };
    let start = find_line(&begin)? + begin.len() + 1;
    let stop = find_line(&end)?;
    if stop < start {
        return Err(format!("`{end}` comes before `{begin}`"));
    }
    Ok(format!("{}{content}{}", &page[..start], &page[stop..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rows() {
        let table = column_table(&[Column::State, Column::RetryAt, Column::CreatedAt]);
        assert_eq!(
            table,
            "| column | type | null | default | meaning |\n\
             |---|---|---|---|---|\n\
             | `state` | SmallInt | no | 0 | Replication state: pending 0, started 1, synced 2, \
             failed 3 (`geo_core::ReplicationState`). |\n\
             | `retry_at` | timestamp | yes |  | When a failed sync may be retried. |\n\
             | `created_at` | timestamp | no | now | When the row was created. |\n"
        );
    }

    #[test]
    fn replaces_only_its_block() {
        let page = format!(
            "intro\n{}\nold\nlines\n{}\noutro\n",
            begin_marker("a"),
            end_marker("a")
        );
        let new = replace_block(&page, "a", "new\n").expect("markers present");
        assert_eq!(
            new,
            format!(
                "intro\n{}\nnew\n{}\noutro\n",
                begin_marker("a"),
                end_marker("a")
            )
        );
        assert_eq!(replace_block(&new, "a", "new\n").as_ref(), Ok(&new));
        assert!(replace_block(&page, "b", "x\n").is_err());
        let twice = format!("{page}{}\n", begin_marker("a"));
        assert!(replace_block(&twice, "a", "x\n").is_err());
        let reversed = format!("{}\n{}\n", end_marker("a"), begin_marker("a"));
        assert!(replace_block(&reversed, "a", "x\n").is_err());
    }
}
