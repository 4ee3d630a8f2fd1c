//! Validation of `#[replicable(partition)]`: at most one field, not the id nor the file field,
//! an integer type (`i16`, `i32`, `i64`, or an `Option` of one), a plain SQL column.

use darling::Error;
use syn::ext::IdentExt;

use super::{Origin, check_ident, span_tokens, type_name};
use crate::ast::Field;

/// The validated partition field.
#[derive(Debug, Clone)]
pub(crate) struct Partition {
    /// The field.
    pub field: syn::Ident,
    /// Its SQL column.
    pub column: String,
    /// Whether the field is an `Option` (`NULL`: the record is in no partition).
    pub optional: bool,
}

/// The integer types a partition field may have.
const INTEGERS: &[&str] = &["i16", "i32", "i64"];

/// `Some(optional)` when `ty` is one of [`INTEGERS`] or an `Option` of one.
fn integer_type(ty: &syn::Type) -> Option<bool> {
    if type_name(ty).is_some_and(|n| INTEGERS.contains(&n.as_str())) {
        return Some(false);
    }
    let syn::Type::Path(p) = ty else {
        return None;
    };
    let last = p.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match (last.ident == "Option", args.args.len(), args.args.first()) {
        (true, 1, Some(syn::GenericArgument::Type(inner)))
            if type_name(inner).is_some_and(|n| INTEGERS.contains(&n.as_str())) =>
        {
            Some(true)
        }
        _ => None,
    }
}

/// Checks the `#[replicable(partition)]` fields. `id` and `file` are the fields chosen as the
/// primary key and the file; every mistake is pushed to `errors`. Returns `Err(())` when a
/// mistake was found, else the partition (if any).
pub(crate) fn validate(
    fields: &[Field],
    id: Option<&syn::Ident>,
    file: Option<&syn::Ident>,
    errors: &mut darling::error::Accumulator,
) -> Result<Option<Partition>, ()> {
    let mut found: Option<Partition> = None;
    let mut ok = true;
    for field in fields {
        let Some(span) = field.opts.partition else {
            continue;
        };
        if found.is_some() {
            errors.push(
                Error::custom(
                    "more than one field is marked `#[replicable(partition)]`; selective sync \
                     selects on one key per type: mark only one field",
                )
                .with_span(&span_tokens(span)),
            );
            ok = false;
            continue;
        }
        let role = if Some(&field.ident) == id {
            Some("primary key")
        } else if Some(&field.ident) == file {
            Some("`#[replicable(file)]` field")
        } else {
            None
        };
        if let Some(role) = role {
            errors.push(
                Error::custom(format!(
                    "the {role} cannot be the partition: mark the field that holds the tenant or \
                     namespace key (an integer shared by many records) with \
                     `#[replicable(partition)]`"
                ))
                .with_span(&span_tokens(span)),
            );
            ok = false;
            continue;
        }
        let Some(optional) = integer_type(&field.ty) else {
            errors.push(
                Error::custom(format!(
                    "the partition `{}` must be an integer: `i16`, `i32` or `i64` (SQL SMALLINT, \
                     INTEGER or BIGINT), or an `Option` of one",
                    field.ident.unraw()
                ))
                .with_span(&field.ty),
            );
            ok = false;
            continue;
        };
        let column = field
            .column_name
            .clone()
            .unwrap_or_else(|| field.ident.unraw().to_string());
        if !check_ident(
            errors,
            "partition column",
            &column,
            Origin::Derived(&field.ident, "the partition field's column"),
        ) {
            ok = false;
            continue;
        }
        found = Some(Partition {
            field: field.ident.clone(),
            column,
            optional,
        });
    }
    if ok { Ok(found) } else { Err(()) }
}
