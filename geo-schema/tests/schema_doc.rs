//! `docs/SCHEMA.md`'s column tables are rendered from the column list. This test fails when the
//! page drifts from the list; `GEO_BLESS=1 cargo test -p geo-schema` rewrites the page instead.

use geo_schema::doc::{Row, markdown_table, replace_block};
use geo_schema::{Column, REGISTRY_COLUMNS, VERIFICATION_COLUMNS};

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SCHEMA.md");

/// A row for a structural column (its name depends on the replicable, so `#[replicable]` owns
/// it and it is not in the list).
fn structural(column: &str, ty: &str, doc: &str) -> Row {
    Row {
        column: column.to_owned(),
        ty: ty.to_owned(),
        nullable: false,
        default: String::new(),
        doc: doc.to_owned(),
    }
}

/// Every generated block of the page: its name and its content.
fn blocks() -> Vec<(&'static str, String)> {
    let registry = [
        structural(
            "`id`",
            "BigInt PK (`INTEGER PRIMARY KEY AUTOINCREMENT` / `BIGSERIAL PRIMARY KEY`)",
            "Registry row id.",
        ),
        structural(
            "`<fk>` (`widget_id`)",
            "BigInt, unique",
            "Id of the record on the primary (`<model>.<id>`).",
        ),
    ]
    .into_iter()
    .chain(REGISTRY_COLUMNS.iter().map(|c| Row::from(c.def())));
    let states = [structural(
        "`<fk>` (`widget_id`)",
        "same SQL type as the model id; PK; `REFERENCES \"<model>\"(\"<id>\") ON DELETE CASCADE`",
        "Id of the record (`<model>.<id>`).",
    )]
    .into_iter()
    .chain(
        VERIFICATION_COLUMNS
            .iter()
            .map(|c: &Column| Row::from(c.primary_def())),
    );
    vec![
        ("registry", markdown_table(registry)),
        ("states", markdown_table(states)),
    ]
}

#[test]
fn schema_doc_is_rendered_from_the_column_list() {
    let page = std::fs::read_to_string(PAGE).expect("docs/SCHEMA.md is readable");
    let mut rendered = page.clone();
    for (name, content) in blocks() {
        rendered = replace_block(&rendered, name, &content)
            .unwrap_or_else(|why| panic!("docs/SCHEMA.md, block `{name}`: {why}"));
    }
    if rendered == page {
        return;
    }
    if std::env::var_os("GEO_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(PAGE, &rendered).expect("docs/SCHEMA.md is writable");
        return;
    }
    let first = page
        .lines()
        .zip(rendered.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| page.lines().count().min(rendered.lines().count()));
    panic!(
        "docs/SCHEMA.md's column tables differ from geo-schema's column list (first at line {}):\n\
         \x20 page:     {}\n\
         \x20 rendered: {}\n\
         Edit the list in geo-schema/src/lib.rs (not the page), then regenerate the page with \
         `GEO_BLESS=1 cargo test -p geo-schema` and commit it.",
        first + 1,
        page.lines().nth(first).unwrap_or("<end of file>"),
        rendered.lines().nth(first).unwrap_or("<end of file>"),
    );
}
