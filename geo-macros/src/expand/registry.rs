//! The registry: its `table!` module (named after `registry`) and the `WidgetRegistry` row type,
//! from geo-schema's column list. Also the mapping of geo-schema's SQL types to Diesel and Rust
//! types that the verification `table!` shares.

use geo_schema::{ColumnDef, REGISTRY_COLUMNS, SqlType};
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::private;
use crate::valid::{IdType, Model};

/// The Rust side of one column: name, Diesel SQL type, Rust type, doc.
pub(crate) struct TableColumn {
    pub name: String,
    pub sql_type: TokenStream,
    pub rust_type: TokenStream,
    pub doc: String,
    /// `#[sql_name = "..."]` when the SQL column differs from `name`.
    pub sql_name: Option<String>,
}

/// The Diesel SQL type and the Rust type of a `NOT NULL` value of `ty` (docs/SCHEMA.md,
/// "Column types"; one `table!` serves both backends).
fn diesel_types(ty: SqlType) -> (TokenStream, TokenStream) {
    let p = private();
    match ty {
        SqlType::BigInt => (quote!(BigInt), quote!(::core::primitive::i64)),
        SqlType::SmallInt => (quote!(SmallInt), quote!(::core::primitive::i16)),
        SqlType::Timestamp => (quote!(GeoTimestamp), quote!(#p::UtcDateTime)),
        SqlType::Binary => (
            quote!(Binary),
            quote!(::std::vec::Vec<::core::primitive::u8>),
        ),
        SqlType::Failure | SqlType::Text => (quote!(Text), quote!(::std::string::String)),
        SqlType::Bool => (quote!(Bool), quote!(::core::primitive::bool)),
    }
}

impl TableColumn {
    /// A structural column (`id`, `<fk>`): not in geo-schema's list, its name depends on the
    /// replicable. `NOT NULL`, of the model id's type or (`key = None`) `BigInt`.
    pub(crate) fn structural(name: &str, key: Option<IdType>, doc: String) -> Self {
        let (sql_type, rust_type) = match key {
            None | Some(IdType::I64) => diesel_types(SqlType::BigInt),
            Some(IdType::I32) => (quote!(Integer), quote!(::core::primitive::i32)),
        };
        TableColumn {
            name: name.to_owned(),
            sql_type,
            rust_type,
            doc,
            sql_name: None,
        }
    }

    /// A column of geo-schema's list, as `def` defines it.
    pub(crate) fn of(def: ColumnDef) -> Self {
        let (sql, rust) = diesel_types(def.ty);
        let (sql_type, rust_type) = if def.nullable {
            (
                quote!(Nullable<#sql>),
                quote!(::core::option::Option<#rust>),
            )
        } else {
            (sql, rust)
        };
        TableColumn {
            name: def.column.name().to_owned(),
            sql_type,
            rust_type,
            doc: def.doc.to_owned(),
            sql_name: None,
        }
    }

    pub(crate) fn ident(&self) -> Ident {
        Ident::new(&self.name, Span::call_site())
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
    pub columns: &'a [TableColumn],
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

/// The registry's columns: `id`, `<fk>`, then geo-schema's [`REGISTRY_COLUMNS`].
pub(crate) fn registry_columns(model: &Model) -> Vec<TableColumn> {
    let fk_doc = format!(
        "Id of the `{}` record on the primary (`{}.{}`); unique.",
        model.name, model.model_table, model.id_column
    );
    let mut columns = vec![
        TableColumn::structural("id", None, "Registry row id.".to_owned()),
        TableColumn::structural(&model.fk, None, fk_doc),
    ];
    columns.extend(REGISTRY_COLUMNS.iter().map(|c| TableColumn::of(c.def())));
    columns
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
