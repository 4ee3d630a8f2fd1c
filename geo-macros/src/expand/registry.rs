//! The registry: its `table!` module (named after `registry`) and the `WidgetRegistry` row type.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::private;
use crate::valid::Model;

/// The Rust side of one column: name, Diesel SQL type, Rust type, doc.
pub(crate) struct Column {
    pub name: String,
    pub sql_type: TokenStream,
    pub rust_type: TokenStream,
    pub doc: String,
    /// `#[sql_name = "..."]` when the SQL column differs from `name`.
    pub sql_name: Option<String>,
}

impl Column {
    pub(crate) fn ident(&self) -> Ident {
        Ident::new(&self.name, Span::call_site())
    }
}

/// Builders for the column kinds of docs/SCHEMA.md.
pub(crate) mod kinds {
    use super::*;

    fn col(name: &str, sql_type: TokenStream, rust_type: TokenStream, doc: &str) -> Column {
        Column {
            name: name.to_owned(),
            sql_type,
            rust_type,
            doc: doc.to_owned(),
            sql_name: None,
        }
    }

    pub(crate) fn big_int(name: &str, doc: &str) -> Column {
        col(name, quote!(BigInt), quote!(::core::primitive::i64), doc)
    }

    pub(crate) fn int(name: &str, doc: &str) -> Column {
        col(name, quote!(Integer), quote!(::core::primitive::i32), doc)
    }

    pub(crate) fn small_int(name: &str, doc: &str) -> Column {
        col(name, quote!(SmallInt), quote!(::core::primitive::i16), doc)
    }

    pub(crate) fn timestamp(name: &str, doc: &str) -> Column {
        let p = private();
        col(name, quote!(GeoTimestamp), quote!(#p::UtcDateTime), doc)
    }

    pub(crate) fn opt_timestamp(name: &str, doc: &str) -> Column {
        let p = private();
        col(
            name,
            quote!(Nullable<GeoTimestamp>),
            quote!(::core::option::Option<#p::UtcDateTime>),
            doc,
        )
    }

    pub(crate) fn opt_binary(name: &str, doc: &str) -> Column {
        col(
            name,
            quote!(Nullable<Binary>),
            quote!(::core::option::Option<::std::vec::Vec<::core::primitive::u8>>),
            doc,
        )
    }

    pub(crate) fn opt_text(name: &str, doc: &str) -> Column {
        col(
            name,
            quote!(Nullable<Text>),
            quote!(::core::option::Option<::std::string::String>),
            doc,
        )
    }

    pub(crate) fn bool(name: &str, doc: &str) -> Column {
        col(name, quote!(Bool), quote!(::core::primitive::bool), doc)
    }
}

/// What [`table_and_row`] generates: a `table!` module and its row type.
pub(crate) struct TableSpec<'a> {
    /// The `table!` module name.
    pub module: &'a str,
    /// Doc comment of the table.
    pub table_doc: &'a str,
    /// `#[sql_name = "..."]` of the table, when it differs from the module.
    pub table_sql_name: Option<&'a str>,
    /// The primary-key column.
    pub key: &'a str,
    /// The columns, in order.
    pub columns: &'a [Column],
    /// The row type.
    pub row: &'a Ident,
    /// Doc comment of the row type.
    pub row_doc: &'a str,
}

/// A `table!` module plus a `Queryable + Selectable` row type with one field per column.
pub(crate) fn table_and_row(model: &Model, spec: &TableSpec<'_>) -> TokenStream {
    let TableSpec {
        module,
        table_doc,
        table_sql_name,
        key,
        columns,
        row,
        row_doc,
    } = *spec;
    let p = private();
    let vis = &model.vis;
    let module = Ident::new(module, Span::call_site());
    let key = Ident::new(key, Span::call_site());
    let table_sql_name = table_sql_name.map(|n| quote!(#[sql_name = #n]));
    let defs = columns.iter().map(|c| {
        let (ident, ty, doc) = (c.ident(), &c.sql_type, &c.doc);
        let sql_name = c.sql_name.as_ref().map(|n| quote!(#[sql_name = #n]));
        quote!(#[doc = #doc] #sql_name #ident -> #ty,)
    });
    let fields = columns.iter().map(|c| {
        let (ident, ty, doc) = (c.ident(), &c.rust_type, &c.doc);
        quote!(#[doc = #doc] #vis #ident: #ty,)
    });
    quote! {
        #p::diesel::table! {
            use #p::diesel::sql_types::*;
            use #p::GeoTimestamp;

            #[doc = #table_doc]
            #table_sql_name
            #module (#key) {
                #(#defs)*
            }
        }

        #[doc = #row_doc]
        #[derive(
            ::core::fmt::Debug,
            ::core::clone::Clone,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            #p::diesel::Queryable,
            #p::diesel::Selectable,
        )]
        #[diesel(table_name = #module)]
        #vis struct #row {
            #(#fields)*
        }
    }
}

/// The registry columns of docs/SCHEMA.md, in order.
pub(crate) fn registry_columns(model: &Model) -> Vec<Column> {
    use kinds::*;
    vec![
        big_int("id", "Registry row id."),
        big_int(
            &model.fk,
            &format!(
                "Id of the `{}` record on the primary (`{}.{}`); unique.",
                model.name, model.model_table, model.id_column
            ),
        ),
        small_int(
            "state",
            "Replication state: pending 0, started 1, synced 2, failed 3 \
             (`geo_core::ReplicationState`).",
        ),
        small_int(
            "retry_count",
            "Failed sync attempts since the last success.",
        ),
        opt_timestamp("retry_at", "When a failed sync may be retried."),
        opt_timestamp("last_synced_at", "When the last sync finished."),
        timestamp("created_at", "When the row was created."),
        opt_text(
            "last_sync_failure",
            "Why the last sync failed (at most 255 characters).",
        ),
        small_int(
            "verification_state",
            "Verification state: pending 0, started 1, succeeded 2, failed 3, disabled 4 \
             (`geo_core::VerificationState`).",
        ),
        opt_timestamp(
            "verification_started_at",
            "When the running verification started.",
        ),
        opt_timestamp("verified_at", "When the file was last verified."),
        opt_timestamp(
            "verification_retry_at",
            "When a failed verification may be retried.",
        ),
        small_int(
            "verification_retry_count",
            "Failed verifications since the last success.",
        ),
        opt_binary(
            "verification_checksum",
            "The checksum computed on this secondary.",
        ),
        opt_binary(
            "verification_checksum_mismatched",
            "The local checksum when it did not match the primary's.",
        ),
        bool(
            "checksum_mismatch",
            "Whether the last verification found a mismatch.",
        ),
        opt_text(
            "verification_failure",
            "Why the last verification failed (at most 255 characters).",
        ),
        bool(
            "missing_on_primary",
            "Whether the primary reported the file missing (longer retry backoff).",
        ),
        opt_text(
            "blob_path",
            "Where the last successful sync put the file, relative to the blob store root \
             (so an orphan's file can be removed after its record is gone on the primary).",
        ),
    ]
}

/// The registry `table!` and `WidgetRegistry`.
pub(crate) fn expand(model: &Model) -> TokenStream {
    let ident = &model.ident;
    let row = model.type_ident("Registry");
    let table_doc = format!(
        "The registry of the `{name}` replicable ([`{ident}`]) on secondaries: one row per \
         `{model}` record with its sync and verification state. Generated by `#[replicable]`; \
         created by `{ident}Replicator::MIGRATIONS.*_secondary`.",
        name = model.name,
        model = model.model_table,
    );
    let row_doc = format!(
        "A row of the `{registry}` registry table (all columns): the sync and verification state \
         of one [`{ident}`] on this secondary. Generated by `#[replicable]`.",
        registry = model.registry,
    );
    table_and_row(
        model,
        &TableSpec {
            module: &model.registry,
            table_doc: &table_doc,
            table_sql_name: None,
            key: "id",
            columns: &registry_columns(model),
            row: &row,
            row_doc: &row_doc,
        },
    )
}
