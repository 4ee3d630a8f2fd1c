//! Naming rules: snake case, Diesel's default table name, English plurals, SQL identifier checks,
//! index names, and "did you mean" suggestions. Plain functions, unit-tested here.

use heck::ToSnakeCase;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`).
pub(crate) use geo_schema::index::MAX_IDENT_LEN;

/// The replicable name derived from a struct name: `PackageFile` → `package_file`.
pub(crate) fn snake_name(struct_name: &str) -> String {
    struct_name.to_snake_case()
}

/// Diesel's default table name for a struct without `#[diesel(table_name = ...)]`, exactly as
/// diesel_derives computes it: each upper-case letter after the first becomes `_` + lower case,
/// then `s` is appended (`PackageFile` → `package_files`, `HTTPLog` → `h_t_t_p_logs`).
pub(crate) fn diesel_table_name(struct_name: &str) -> String {
    let mut chars = struct_name.chars();
    let mut out = String::with_capacity(struct_name.len() + 4);
    if let Some(first) = chars.next() {
        out.extend(first.to_lowercase());
    }
    for c in chars {
        if c.is_uppercase() {
            out.push('_');
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out.push('s');
    out
}

/// The English plural of a snake-case name, inflecting its last word:
/// `widget` → `widgets`, `box` → `boxes`, `category` → `categories`,
/// `package_file` → `package_files`.
pub(crate) fn plural(name: &str) -> String {
    let vowel = |c: char| matches!(c, 'a' | 'e' | 'i' | 'o' | 'u');
    if let Some(stem) = name.strip_suffix('y')
        && stem.chars().last().is_some_and(|c| !vowel(c) && c != '_')
    {
        return format!("{stem}ies");
    }
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        return format!("{name}es");
    }
    format!("{name}s")
}

/// Why `ident` is not a plain SQL identifier, or `None` when it is one: `[a-z_][a-z0-9_]*`,
/// at most 63 bytes.
pub(crate) fn sql_identifier_problem(ident: &str) -> Option<String> {
    let first_ok = ident
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = ident
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ident.is_empty() {
        Some("it is empty".to_owned())
    } else if !first_ok || !rest_ok {
        Some(
            "only lower-case ASCII letters, digits and `_` are allowed, not starting with a digit \
             (`[a-z_][a-z0-9_]*`)"
                .to_owned(),
        )
    } else if ident.len() > MAX_IDENT_LEN {
        Some(format!(
            "it is {} bytes long; SQL identifiers are limited to {MAX_IDENT_LEN} bytes",
            ident.len()
        ))
    } else {
        None
    }
}

/// An index name `index_<table>_<suffix>`, cut to 63 bytes with a stable hash
/// ([`geo_schema::index::name`]: geo-diesel names the same indexes).
pub(crate) use geo_schema::index::name as index_name;

/// The closest of `candidates` to `input`, if it is close enough to be a likely typo. Distance
/// is the optimal string alignment distance: an insertion, deletion, substitution or swap of two
/// neighbours is one edit (`fiel` → `file`).
pub(crate) fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::osa_distance(&lower, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) || (lower.len() >= 3 && c.starts_with(&lower)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        for (one, many) in [
            ("widget", "widgets"),
            ("box", "boxes"),
            ("category", "categories"),
            ("package_file", "package_files"),
            ("key", "keys"),
            ("branch", "branches"),
            ("status", "statuses"),
            ("lfs_object", "lfs_objects"),
        ] {
            assert_eq!(plural(one), many, "{one}");
        }
    }

    #[test]
    fn diesel_rule() {
        assert_eq!(diesel_table_name("Widget"), "widgets");
        assert_eq!(diesel_table_name("PackageFile"), "package_files");
        assert_eq!(diesel_table_name("HTTPLog"), "h_t_t_p_logs");
        assert_eq!(snake_name("HTTPLog"), "http_log");
    }

    #[test]
    fn identifiers() {
        assert_eq!(sql_identifier_problem("widget_registry"), None);
        assert_eq!(sql_identifier_problem("_x9"), None);
        assert!(sql_identifier_problem("Widget").is_some());
        assert!(sql_identifier_problem("9lives").is_some());
        assert!(sql_identifier_problem("a-b").is_some());
        assert!(sql_identifier_problem("").is_some());
        assert!(sql_identifier_problem(&"a".repeat(64)).is_some());
        assert_eq!(sql_identifier_problem(&"a".repeat(63)), None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("stratgy", &["strategy", "name"]),
            Some("strategy")
        );
        assert_eq!(did_you_mean("fil", &["file", "id"]), Some("file"));
        assert_eq!(did_you_mean("fiel", &["file", "id"]), Some("file"));
        assert_eq!(did_you_mean("idd", &["file", "id"]), Some("id"));
        assert_eq!(
            did_you_mean("regisrty", &["strategy", "registry"]),
            Some("registry")
        );
        assert_eq!(did_you_mean("blop", &["blob"]), Some("blob"));
        assert_eq!(
            did_you_mean("inlined", &["separate", "inline", "none"]),
            Some("inline")
        );
        assert_eq!(did_you_mean("zzzzzz", &["file", "id"]), None);
    }
}
