//! In-process tests of the attribute: expansion snapshots (insta, prettyplease), golden
//! migration SQL, and parser/validator error reports.

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::migration::{
    Backend, Sql, inline_migration, registry_migration, states_migration,
};
use crate::valid::IdType;

fn pretty(tokens: TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("the expansion parses as a file");
    prettyplease::unparse(&file)
}

/// The expansion of `#[replicable(args)] item`, pretty-printed.
fn expansion(args: TokenStream, item: TokenStream) -> String {
    let out = crate::expand(args.clone(), item.clone());
    assert_eq!(
        out.to_string(),
        crate::expand(args, item).to_string(),
        "expansion is deterministic"
    );
    pretty(out)
}

/// The error messages reported for `#[replicable(args)] item`, in order.
fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
    let item: syn::Item = syn::parse2(item).expect("test item parses");
    match crate::analyze(args, item).1 {
        Ok(_) => Vec::new(),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn widget() -> TokenStream {
    quote! {
        #[derive(Queryable, Selectable, Identifiable, Insertable)]
        #[diesel(table_name = widgets)]
        pub struct Widget {
            pub id: i64,
            #[replicable(file)]
            pub file_path: String,
            pub name: String,
        }
    }
}

mod snapshots {
    use super::*;

    #[test]
    fn default() {
        insta::assert_snapshot!(expansion(quote!(strategy = "blob"), widget()));
    }

    #[test]
    fn custom_registry_and_name() {
        insta::assert_snapshot!(expansion(
            quote!(
                strategy = "blob",
                registry = "gadget_files_registry",
                name = "gadget"
            ),
            widget()
        ));
    }

    #[test]
    fn verification_inline() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob", verification = "inline"),
            widget()
        ));
    }

    #[test]
    fn verification_none() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob", verification = "none"),
            widget()
        ));
    }

    #[test]
    fn disabled_by_default() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob", enabled_by_default = false),
            widget()
        ));
    }

    #[test]
    fn events_manual() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob", events = "manual"),
            widget()
        ));
    }

    #[test]
    fn custom_id_field() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob"),
            quote! {
                #[derive(Queryable, Selectable)]
                #[diesel(table_name = package_files, primary_key(file_id))]
                pub(crate) struct PackageFile {
                    #[replicable(id)]
                    pub file_id: i64,
                    #[replicable(file)]
                    #[diesel(column_name = path)]
                    pub file_path: String,
                }
            }
        ));
    }

    #[test]
    fn i32_id() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob"),
            quote! {
                #[derive(Queryable, Selectable)]
                #[diesel(table_name = boxes)]
                pub struct Box {
                    pub id: i32,
                    #[replicable(file)]
                    pub path: String,
                }
            }
        ));
    }

    /// Written below `#[derive(...)]`, the attribute receives the struct without the derive
    /// (rustc has taken it); the output must not depend on that.
    #[test]
    fn attribute_below_derive() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob"),
            quote! {
                #[diesel(table_name = widgets)]
                pub struct Widget {
                    pub id: i64,
                    #[replicable(file)]
                    pub file_path: String,
                }
            }
        ));
    }

    #[test]
    fn table_name_from_path() {
        insta::assert_snapshot!(expansion(
            quote!(strategy = "blob"),
            quote! {
                #[derive(Queryable, Selectable)]
                #[diesel(check_for_backend(diesel::sqlite::Sqlite))]
                #[diesel(table_name = crate::schema::lfs_objects)]
                struct LfsObject {
                    id: i64,
                    #[replicable(file)]
                    file: String,
                }
            }
        ));
    }

    /// On error: the struct without our helpers, the errors, and the stand-in replicator.
    #[test]
    fn fallback_on_error() {
        insta::assert_snapshot!(expansion(quote!(strategy = "blop"), widget()));
    }
}

mod sql {
    use super::*;

    fn registry(backend: Backend) -> Sql {
        registry_migration(backend, "widget_registry", "widget_id")
    }

    const SQLITE_REGISTRY_UP: &str = r#"CREATE TABLE IF NOT EXISTS "widget_registry" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "widget_id" BIGINT NOT NULL,
    "state" SMALLINT NOT NULL DEFAULT 0,
    "retry_count" SMALLINT NOT NULL DEFAULT 0,
    "retry_at" TEXT,
    "last_synced_at" TEXT,
    "created_at" TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    "last_sync_failure" VARCHAR(255),
    "verification_state" SMALLINT NOT NULL DEFAULT 0,
    "verification_started_at" TEXT,
    "verified_at" TEXT,
    "verification_retry_at" TEXT,
    "verification_retry_count" SMALLINT NOT NULL DEFAULT 0,
    "verification_checksum" BLOB,
    "verification_checksum_mismatched" BLOB,
    "checksum_mismatch" BOOLEAN NOT NULL DEFAULT FALSE,
    "verification_failure" VARCHAR(255),
    "missing_on_primary" BOOLEAN NOT NULL DEFAULT FALSE,
    "blob_path" TEXT,
    "claimed_by" TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS "index_widget_registry_on_widget_id" ON "widget_registry" ("widget_id");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_retry_at" ON "widget_registry" ("retry_at");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_blob_path" ON "widget_registry" ("blob_path");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_state_and_id" ON "widget_registry" ("state", "id");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_verification_state_and_id" ON "widget_registry" ("verification_state", "id");
CREATE INDEX IF NOT EXISTS "index_widget_registry_failed_verification" ON "widget_registry" ("verification_retry_at") WHERE "state" = 2 AND "verification_state" = 3;
CREATE INDEX IF NOT EXISTS "index_widget_registry_needs_verification" ON "widget_registry" ("verification_state") WHERE "state" = 2 AND "verification_state" IN (0, 3);
CREATE INDEX IF NOT EXISTS "index_widget_registry_pending_verification" ON "widget_registry" ("verified_at") WHERE "state" = 2 AND "verification_state" = 0;
"#;

    const POSTGRES_REGISTRY_UP: &str = r#"CREATE TABLE IF NOT EXISTS "widget_registry" (
    "id" BIGSERIAL PRIMARY KEY,
    "widget_id" BIGINT NOT NULL,
    "state" SMALLINT NOT NULL DEFAULT 0,
    "retry_count" SMALLINT NOT NULL DEFAULT 0,
    "retry_at" TIMESTAMPTZ,
    "last_synced_at" TIMESTAMPTZ,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "last_sync_failure" VARCHAR(255),
    "verification_state" SMALLINT NOT NULL DEFAULT 0,
    "verification_started_at" TIMESTAMPTZ,
    "verified_at" TIMESTAMPTZ,
    "verification_retry_at" TIMESTAMPTZ,
    "verification_retry_count" SMALLINT NOT NULL DEFAULT 0,
    "verification_checksum" BYTEA,
    "verification_checksum_mismatched" BYTEA,
    "checksum_mismatch" BOOLEAN NOT NULL DEFAULT FALSE,
    "verification_failure" VARCHAR(255),
    "missing_on_primary" BOOLEAN NOT NULL DEFAULT FALSE,
    "blob_path" TEXT,
    "claimed_by" TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS "index_widget_registry_on_widget_id" ON "widget_registry" ("widget_id");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_retry_at" ON "widget_registry" ("retry_at");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_blob_path" ON "widget_registry" ("blob_path");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_state_and_id" ON "widget_registry" ("state", "id");
CREATE INDEX IF NOT EXISTS "index_widget_registry_on_verification_state_and_id" ON "widget_registry" ("verification_state", "id");
CREATE INDEX IF NOT EXISTS "index_widget_registry_failed_verification" ON "widget_registry" ("verification_retry_at" NULLS FIRST) WHERE "state" = 2 AND "verification_state" = 3;
CREATE INDEX IF NOT EXISTS "index_widget_registry_needs_verification" ON "widget_registry" ("verification_state") WHERE "state" = 2 AND "verification_state" IN (0, 3);
CREATE INDEX IF NOT EXISTS "index_widget_registry_pending_verification" ON "widget_registry" ("verified_at" NULLS FIRST) WHERE "state" = 2 AND "verification_state" = 0;
"#;

    #[test]
    fn secondary_registry() {
        assert_eq!(registry(Backend::Sqlite).up, SQLITE_REGISTRY_UP);
        assert_eq!(registry(Backend::Postgres).up, POSTGRES_REGISTRY_UP);
        for backend in [Backend::Sqlite, Backend::Postgres] {
            assert_eq!(
                registry(backend).down,
                "DROP TABLE IF EXISTS \"widget_registry\";\n"
            );
        }
    }

    #[test]
    fn primary_separate() {
        let sqlite = states_migration(
            Backend::Sqlite,
            "widget_states",
            "widget_id",
            IdType::I64,
            "widgets",
            "id",
        );
        assert_eq!(
            sqlite.up,
            r#"CREATE TABLE IF NOT EXISTS "widget_states" (
    "widget_id" BIGINT NOT NULL PRIMARY KEY REFERENCES "widgets" ("id") ON DELETE CASCADE,
    "verification_state" SMALLINT NOT NULL DEFAULT 0,
    "verification_started_at" TEXT,
    "verification_retry_at" TEXT,
    "verified_at" TEXT,
    "verification_retry_count" SMALLINT NOT NULL DEFAULT 0,
    "verification_checksum" BLOB,
    "verification_failure" VARCHAR(255)
);
CREATE INDEX IF NOT EXISTS "index_widget_states_pending_verification" ON "widget_states" ("verified_at") WHERE "verification_state" = 0;
CREATE INDEX IF NOT EXISTS "index_widget_states_failed_verification" ON "widget_states" ("verification_retry_at") WHERE "verification_state" = 3;
CREATE INDEX IF NOT EXISTS "index_widget_states_started_verification" ON "widget_states" ("verification_started_at") WHERE "verification_state" = 1;
"#
        );
        assert_eq!(sqlite.down, "DROP TABLE IF EXISTS \"widget_states\";\n");

        let postgres = states_migration(
            Backend::Postgres,
            "widget_states",
            "widget_id",
            IdType::I32,
            "widgets",
            "id",
        );
        assert_eq!(
            postgres.up,
            r#"CREATE TABLE IF NOT EXISTS "widget_states" (
    "widget_id" INTEGER NOT NULL PRIMARY KEY REFERENCES "widgets" ("id") ON DELETE CASCADE,
    "verification_state" SMALLINT NOT NULL DEFAULT 0,
    "verification_started_at" TIMESTAMPTZ,
    "verification_retry_at" TIMESTAMPTZ,
    "verified_at" TIMESTAMPTZ,
    "verification_retry_count" SMALLINT NOT NULL DEFAULT 0,
    "verification_checksum" BYTEA,
    "verification_failure" VARCHAR(255)
);
CREATE INDEX IF NOT EXISTS "index_widget_states_pending_verification" ON "widget_states" ("verified_at" NULLS FIRST) WHERE "verification_state" = 0;
CREATE INDEX IF NOT EXISTS "index_widget_states_failed_verification" ON "widget_states" ("verification_retry_at" NULLS FIRST) WHERE "verification_state" = 3;
CREATE INDEX IF NOT EXISTS "index_widget_states_started_verification" ON "widget_states" ("verification_started_at") WHERE "verification_state" = 1;
"#
        );
        assert_eq!(postgres.down, "DROP TABLE IF EXISTS \"widget_states\";\n");
    }

    #[test]
    fn primary_inline() {
        let sqlite = inline_migration(Backend::Sqlite, "widgets");
        assert_eq!(
            sqlite.up,
            r#"ALTER TABLE "widgets" ADD COLUMN "verification_state" SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE "widgets" ADD COLUMN "verification_started_at" TEXT;
ALTER TABLE "widgets" ADD COLUMN "verification_retry_at" TEXT;
ALTER TABLE "widgets" ADD COLUMN "verified_at" TEXT;
ALTER TABLE "widgets" ADD COLUMN "verification_retry_count" SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE "widgets" ADD COLUMN "verification_checksum" BLOB;
ALTER TABLE "widgets" ADD COLUMN "verification_failure" VARCHAR(255);
CREATE INDEX IF NOT EXISTS "index_widgets_pending_verification" ON "widgets" ("verified_at") WHERE "verification_state" = 0;
CREATE INDEX IF NOT EXISTS "index_widgets_failed_verification" ON "widgets" ("verification_retry_at") WHERE "verification_state" = 3;
CREATE INDEX IF NOT EXISTS "index_widgets_started_verification" ON "widgets" ("verification_started_at") WHERE "verification_state" = 1;
"#
        );
        assert_eq!(
            sqlite.down,
            r#"DROP INDEX IF EXISTS "index_widgets_pending_verification";
DROP INDEX IF EXISTS "index_widgets_failed_verification";
DROP INDEX IF EXISTS "index_widgets_started_verification";
ALTER TABLE "widgets" DROP COLUMN "verification_failure";
ALTER TABLE "widgets" DROP COLUMN "verification_checksum";
ALTER TABLE "widgets" DROP COLUMN "verification_retry_count";
ALTER TABLE "widgets" DROP COLUMN "verified_at";
ALTER TABLE "widgets" DROP COLUMN "verification_retry_at";
ALTER TABLE "widgets" DROP COLUMN "verification_started_at";
ALTER TABLE "widgets" DROP COLUMN "verification_state";
"#
        );

        let postgres = inline_migration(Backend::Postgres, "widgets");
        assert_eq!(
            postgres.up,
            r#"ALTER TABLE "widgets" ADD COLUMN IF NOT EXISTS "verification_state" SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE "widgets" ADD COLUMN IF NOT EXISTS "verification_started_at" TIMESTAMPTZ;
ALTER TABLE "widgets" ADD COLUMN IF NOT EXISTS "verification_retry_at" TIMESTAMPTZ;
ALTER TABLE "widgets" ADD COLUMN IF NOT EXISTS "verified_at" TIMESTAMPTZ;
ALTER TABLE "widgets" ADD COLUMN IF NOT EXISTS "verification_retry_count" SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE "widgets" ADD COLUMN IF NOT EXISTS "verification_checksum" BYTEA;
ALTER TABLE "widgets" ADD COLUMN IF NOT EXISTS "verification_failure" VARCHAR(255);
CREATE INDEX IF NOT EXISTS "index_widgets_pending_verification" ON "widgets" ("verified_at" NULLS FIRST) WHERE "verification_state" = 0;
CREATE INDEX IF NOT EXISTS "index_widgets_failed_verification" ON "widgets" ("verification_retry_at" NULLS FIRST) WHERE "verification_state" = 3;
CREATE INDEX IF NOT EXISTS "index_widgets_started_verification" ON "widgets" ("verification_started_at") WHERE "verification_state" = 1;
"#
        );
        assert_eq!(
            postgres.down,
            r#"DROP INDEX IF EXISTS "index_widgets_pending_verification";
DROP INDEX IF EXISTS "index_widgets_failed_verification";
DROP INDEX IF EXISTS "index_widgets_started_verification";
ALTER TABLE "widgets" DROP COLUMN IF EXISTS "verification_failure";
ALTER TABLE "widgets" DROP COLUMN IF EXISTS "verification_checksum";
ALTER TABLE "widgets" DROP COLUMN IF EXISTS "verification_retry_count";
ALTER TABLE "widgets" DROP COLUMN IF EXISTS "verified_at";
ALTER TABLE "widgets" DROP COLUMN IF EXISTS "verification_retry_at";
ALTER TABLE "widgets" DROP COLUMN IF EXISTS "verification_started_at";
ALTER TABLE "widgets" DROP COLUMN IF EXISTS "verification_state";
"#
        );
    }

    /// `verification = "none"`: the primary gets nothing, the secondary its registry.
    #[test]
    fn primary_none_through_the_model() {
        let item: syn::Item = syn::parse2(widget()).expect("parses");
        let (_, model) = crate::analyze(quote!(strategy = "blob", verification = "none"), item);
        let model = model.expect("valid");
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let primary = crate::expand::migration::primary_migration(&model, backend);
            assert_eq!(primary, Sql::default());
            assert_eq!(
                crate::expand::migration::secondary_migration(&model, backend),
                registry(backend)
            );
        }
    }

    #[test]
    fn long_index_names_are_cut_to_63_bytes() {
        let registry = format!("{}_registry", "x".repeat(50));
        let sql = registry_migration(Backend::Postgres, &registry, "x_id");
        let names: Vec<&str> = sql
            .up
            .lines()
            .filter_map(|l| l.split('"').nth(1).filter(|_| l.contains("INDEX")))
            .collect();
        assert_eq!(names.len(), 8);
        for name in &names {
            assert!(name.len() <= 63, "{name}");
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}

mod parse {
    use super::*;

    #[test]
    fn a_misspelt_events_value_is_one_error_with_a_suggestion() {
        let e = errors(quote!(strategy = "blob", events = "trigers"), widget());
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("unknown events `\"trigers\"`"), "{}", e[0]);
        assert!(e[0].contains("`\"triggers\"`, `\"manual\"`"), "{}", e[0]);
        assert!(e[0].contains("did you mean `\"triggers\"`?"), "{}", e[0]);
        let e = errors(quote!(strategy = "blob", events = manual), widget());
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("`events = \"triggers\"`"), "{}", e[0]);
    }

    #[test]
    fn three_mistakes_three_errors() {
        let e = errors(
            quote!(
                stratgy = "blob",
                verification = "inlined",
                enabled_by_default = "yes"
            ),
            widget(),
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].contains("unknown key `stratgy`"), "{}", e[0]);
        assert!(e[0].contains("did you mean `strategy`?"), "{}", e[0]);
        assert!(
            e[1].contains("unknown verification `\"inlined\"`"),
            "{}",
            e[1]
        );
        assert!(
            e[1].contains("`\"separate\"`, `\"inline\"`, `\"none\"`"),
            "{}",
            e[1]
        );
        assert!(e[1].contains("did you mean `\"inline\"`?"), "{}", e[1]);
        assert!(
            e[2].contains("`enabled_by_default` takes a bool"),
            "{}",
            e[2]
        );
        // The misspelt `strategy` also means it is missing.
        assert!(e[3].starts_with("missing `strategy`"), "{}", e[3]);
    }

    #[test]
    fn valid_input_has_no_errors() {
        assert_eq!(
            errors(quote!(strategy = "blob"), widget()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn strategy_values() {
        let e = errors(quote!(strategy = "blop"), widget());
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("expected one of: `\"blob\"`"));
        assert!(e[0].contains("did you mean `\"blob\"`?"));
        let e = errors(quote!(strategy = "repository"), widget());
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("planned"), "{}", e[0]);
        let e = errors(quote!(strategy = blob), widget());
        assert_eq!(
            e,
            ["`strategy` takes a string literal: `strategy = \"blob\"`"]
        );
    }

    #[test]
    fn duplicates_and_missing() {
        let e = errors(quote!(strategy = "blob", name = "a", name = "b"), widget());
        assert_eq!(e, ["duplicate key `name`: give it only once"]);
        let e = errors(quote!(), widget());
        assert_eq!(
            e,
            ["missing `strategy`: write `#[replicable(strategy = \"blob\")]`"]
        );
    }

    #[test]
    fn sql_identifiers() {
        let e = errors(
            quote!(
                strategy = "blob",
                registry = "Widget-Registry",
                name = "widget"
            ),
            widget(),
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("`registry` must be a plain SQL identifier"));
        assert!(e[0].contains("[a-z_][a-z0-9_]*"));
        let long = "n".repeat(64);
        let e = errors(quote!(strategy = "blob", name = #long), widget());
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("64 bytes long"), "{}", e[0]);
        // 60 bytes is fine for the name, but `<name>_registry` is not.
        let sixty = "n".repeat(60);
        let e = errors(quote!(strategy = "blob", name = #sixty), widget());
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("the foreign-key column") || e[0].starts_with("the registry table")
        );
        let e = errors(quote!(strategy = "blob", registry = "type"), widget());
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("Rust keyword"));
    }

    #[test]
    fn fields() {
        let e = errors(
            quote!(strategy = "blob"),
            quote! {
                struct Widget {
                    #[replicable(id)] key: u64,
                    #[replicable(fil)] a: String,
                    #[replicable(file)] b: String,
                    #[replicable(file)] c: String,
                }
            },
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].contains("unknown field option `fil`") && e[0].contains("did you mean `file`?")
        );
        assert!(e[1].contains("must be `i64` or `i32`"), "{}", e[1]);
        assert!(e[2].contains("more than one field is marked `#[replicable(file)]`"));

        let e = errors(
            quote!(strategy = "blob"),
            quote!(
                struct W {
                    key: i64,
                    path: String,
                }
            ),
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].starts_with("no primary-key field"));
        assert!(e[1].contains("mark it with `#[replicable(file)]`"));

        let e = errors(
            quote!(strategy = "blob"),
            quote!(
                struct W {
                    #[replicable(id)]
                    a: i64,
                    #[replicable(id)]
                    b: i64,
                    #[replicable(file)]
                    p: std::path::PathBuf,
                }
            ),
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].starts_with("more than one field is marked `#[replicable(id)]`"));
        assert!(e[1].contains("must be a `String`"));
    }

    /// `#[replicable(fiel)]` on the only path field: one error, the misspelling, and not a
    /// second one saying no field is marked `#[replicable(file)]`.
    #[test]
    fn misspelt_field_option_is_one_error() {
        for attr in [
            quote!(#[replicable(fiel)]),
            quote!(#[replicable(fiel = true)]),
        ] {
            let e = errors(
                quote!(strategy = "blob"),
                quote! {
                    struct Widget {
                        id: i64,
                        #attr
                        file_path: String,
                    }
                },
            );
            assert_eq!(e.len(), 1, "{e:#?}");
            assert!(e[0].contains("unknown field option `fiel`"), "{}", e[0]);
            assert!(e[0].contains("did you mean `file`?"), "{}", e[0]);
        }

        // The same for a misspelt `id` on a key field not named `id`.
        let e = errors(
            quote!(strategy = "blob"),
            quote! {
                struct Widget {
                    #[replicable(idd)]
                    key: i64,
                    #[replicable(file)]
                    file_path: String,
                }
            },
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("did you mean `id`?"), "{}", e[0]);

        // An unknown option that suggests nothing does not stand for `file`: the missing
        // file field is still reported.
        let e = errors(
            quote!(strategy = "blob"),
            quote! {
                struct Widget {
                    id: i64,
                    #[replicable(zzzzzz)]
                    file_path: String,
                }
            },
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].contains("unknown field option `zzzzzz`"), "{}", e[0]);
        assert!(
            e[1].contains("mark it with `#[replicable(file)]`"),
            "{}",
            e[1]
        );
    }

    #[test]
    fn shapes() {
        for (item, word) in [
            (
                quote!(
                    enum W {
                        A,
                    }
                ),
                "enum",
            ),
            (quote!(union W { a: u8 }), "union"),
            (
                quote!(
                    struct W(i64, String);
                ),
                "tuple struct",
            ),
            (
                quote!(
                    struct W;
                ),
                "unit struct",
            ),
        ] {
            let e = errors(quote!(strategy = "blob"), item);
            assert_eq!(e.len(), 1, "{e:#?}");
            assert!(e[0].contains(word), "{}", e[0]);
        }
        let e = errors(
            quote!(strategy = "blob"),
            quote!(
                struct W<T> {
                    id: i64,
                    #[replicable(file)]
                    p: String,
                    t: T,
                }
            ),
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("does not support generic structs"));
    }

    #[test]
    fn table_names() {
        let item: syn::Item = syn::parse2(quote! {
            #[diesel(table_name = crate::schema::lfs_objects)]
            struct LfsObject { id: i64, #[replicable(file)] file: String }
        })
        .expect("parses");
        let model = crate::analyze(quote!(strategy = "blob"), item)
            .1
            .expect("valid");
        assert_eq!(model.model_table, "lfs_objects");
        assert_eq!(
            (model.name.as_str(), model.plural.as_str()),
            ("lfs_object", "lfs_objects")
        );

        let item: syn::Item = syn::parse2(quote!(
            struct HTTPLog {
                id: i64,
                #[replicable(file)]
                f: String,
            }
        ))
        .expect("parses");
        let model = crate::analyze(quote!(strategy = "blob"), item)
            .1
            .expect("valid");
        assert_eq!(model.model_table, "h_t_t_p_logs");
        assert_eq!(model.name, "http_log");
        assert_eq!(model.registry, "http_log_registry");
    }

    #[test]
    fn field_helpers_are_stripped() {
        let out = crate::expand(quote!(strategy = "blob"), widget()).to_string();
        assert!(!out.contains("replicable (file)"), "{out}");
        let out = crate::expand(quote!(strategy = "nope"), widget()).to_string();
        assert!(!out.contains("replicable (file)"), "{out}");
        assert!(out.contains("compile_error"));
    }

    #[test]
    fn non_item_input_is_returned_with_an_error() {
        let out = crate::expand(
            quote!(strategy = "blob"),
            quote!(
                fn f() {}
            ),
        )
        .to_string();
        assert!(out.contains("fn f"));
        assert!(out.contains("applies to a struct with named fields"));
    }
}

mod partition;
