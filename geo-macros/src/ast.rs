//! The annotated item as the attribute receives it: its shape, its fields with their
//! `#[replicable(...)]` options, and what its `#[diesel(...)]` attributes say.

use darling::Error;
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Fields, Ident, Item, Lit, Meta, Token, Visibility};

use crate::attr::{FieldOpts, parse_field_attr};

/// One named field of the struct.
#[derive(Debug)]
pub(crate) struct Field {
    /// The field name.
    pub ident: Ident,
    /// Its type.
    pub ty: syn::Type,
    /// Its `#[replicable(...)]` options.
    pub opts: FieldOpts,
    /// `#[diesel(column_name = ...)]`, when given: the SQL column differs from the field name.
    pub column_name: Option<String>,
}

/// The annotated struct, as far as it could be read.
#[derive(Debug)]
pub(crate) struct Input {
    /// The item to re-emit, with our field helpers removed.
    pub stripped: Item,
    /// The struct (or other item) name, when the item has one.
    pub ident: Option<Ident>,
    /// Its visibility.
    pub vis: Visibility,
    /// Whether it has generic parameters (an error; the fallback then emits no stub impls).
    pub has_generics: bool,
    /// The named fields, in declaration order; `None` when the item is not a struct with named
    /// fields (an error already reported).
    pub fields: Option<Vec<Field>>,
    /// `#[diesel(table_name = ...)]` on the struct.
    pub table_name: Option<syn::Path>,
}

fn is_ours(attr: &Attribute) -> bool {
    attr.path().is_ident("replicable")
}

/// Removes our field-level helpers from every field of `fields`, returning the removed ones.
fn strip_fields(fields: &mut Fields) -> Vec<Vec<Attribute>> {
    fields
        .iter_mut()
        .map(|f| {
            let (ours, rest): (Vec<_>, Vec<_>) = f.attrs.drain(..).partition(is_ours);
            f.attrs = rest;
            ours
        })
        .collect()
}

/// The `key = value` items of every `#[diesel(...)]` attribute in `attrs`. Attributes that do
/// not parse are skipped: they are Diesel's to report.
fn diesel_items(attrs: &[Attribute]) -> Vec<Meta> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("diesel"))
        .filter_map(|a| {
            a.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .ok()
        })
        .flatten()
        .collect()
}

fn diesel_value<'m>(items: &'m [Meta], key: &str) -> Option<&'m Expr> {
    items.iter().find_map(|m| match m {
        Meta::NameValue(nv) if nv.path.is_ident(key) => Some(&nv.value),
        _ => None,
    })
}

/// Reads the annotated item. Shape errors are pushed to `errors`.
pub(crate) fn parse_input(item: Item, errors: &mut darling::error::Accumulator) -> Input {
    let mut stripped = item;
    let mut input = Input {
        stripped: Item::Verbatim(TokenStream::new()),
        ident: None,
        vis: Visibility::Inherited,
        has_generics: false,
        fields: None,
        table_name: None,
    };
    match &mut stripped {
        Item::Struct(s) => {
            input.ident = Some(s.ident.clone());
            input.vis = s.vis.clone();
            let items = diesel_items(&s.attrs);
            input.table_name = match diesel_value(&items, "table_name") {
                Some(Expr::Path(p)) => Some(p.path.clone()),
                _ => None,
            };
            check_generics(&s.generics, &mut input, errors);
            let ours = strip_fields(&mut s.fields);
            match &s.fields {
                Fields::Named(named) => {
                    let mut fields = Vec::new();
                    for (field, attrs) in named.named.iter().zip(ours) {
                        let mut opts = FieldOpts::default();
                        for attr in &attrs {
                            parse_field_attr(attr, &mut opts, errors);
                        }
                        let column_name =
                            match diesel_value(&diesel_items(&field.attrs), "column_name") {
                                Some(Expr::Path(p)) => p
                                    .path
                                    .get_ident()
                                    .map(|i| syn::ext::IdentExt::unraw(i).to_string()),
                                Some(Expr::Lit(syn::ExprLit {
                                    lit: Lit::Str(s), ..
                                })) => Some(s.value()),
                                _ => None,
                            };
                        if let Some(ident) = &field.ident {
                            fields.push(Field {
                                ident: ident.clone(),
                                ty: field.ty.clone(),
                                opts,
                                column_name,
                            });
                        }
                    }
                    input.fields = Some(fields);
                }
                Fields::Unnamed(_) => errors.push(
                    Error::custom(
                        "#[replicable] does not support tuple structs: use named fields, e.g. \
                         `struct Widget { id: i64, #[replicable(file)] file_path: String }`",
                    )
                    .with_span(&s.struct_token),
                ),
                Fields::Unit => errors.push(
                    Error::custom(
                        "#[replicable] does not support unit structs: the model needs named \
                         fields, including its id and the `#[replicable(file)]` path",
                    )
                    .with_span(&s.struct_token),
                ),
            }
        }
        Item::Enum(e) => {
            input.ident = Some(e.ident.clone());
            input.vis = e.vis.clone();
            check_generics(&e.generics, &mut input, errors);
            for v in &mut e.variants {
                strip_fields(&mut v.fields);
            }
            errors.push(
                Error::custom(
                    "#[replicable] applies to a struct with named fields, not to an enum",
                )
                .with_span(&e.enum_token),
            );
        }
        Item::Union(u) => {
            input.ident = Some(u.ident.clone());
            input.vis = u.vis.clone();
            check_generics(&u.generics, &mut input, errors);
            let mut fields = Fields::Named(u.fields.clone());
            strip_fields(&mut fields);
            if let Fields::Named(named) = fields {
                u.fields = named;
            }
            errors.push(
                Error::custom(
                    "#[replicable] applies to a struct with named fields, not to a union",
                )
                .with_span(&u.union_token),
            );
        }
        other => errors.push(
            Error::custom("#[replicable] applies to a struct with named fields")
                .with_span(&other.to_token_stream()),
        ),
    }
    input.stripped = stripped;
    input
}

fn check_generics(
    generics: &syn::Generics,
    input: &mut Input,
    errors: &mut darling::error::Accumulator,
) {
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        input.has_generics = true;
        let err = Error::custom(
            "#[replicable] does not support generic structs: each replicable is one concrete \
                 model type with its own registry and descriptor",
        );
        errors.push(match generics.params.first() {
            Some(first) => err.with_span(first),
            None => err.with_span(&generics.where_clause),
        });
    }
}
