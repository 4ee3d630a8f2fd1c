//! Validation: turns what was written ([`attr::StructArgs`], [`ast::Input`]) into a [`Model`]
//! in which every name is decided and every SQL identifier checked. Every mistake is pushed to
//! the accumulator, spanned on the offending token; nothing returns early.

use darling::Error;
use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Ident, LitStr, Visibility};

use crate::ast::Input;
use crate::attr::{EventsArg, StrategyArg, StructArgs, VerificationArg};
use crate::names::{diesel_table_name, plural, snake_name, sql_identifier_problem};

mod partition;
pub(crate) use partition::Partition;

/// The Rust type of the model's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdType {
    /// `i64`: SQL `BIGINT`, Diesel `BigInt`.
    I64,
    /// `i32`: SQL `INTEGER`, Diesel `Integer`.
    I32,
}

/// A validated model: everything expansion needs, every name final.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// The struct name, e.g. `Widget`.
    pub ident: Ident,
    /// The struct's visibility, given to every generated item.
    pub vis: Visibility,
    /// The replicable name, e.g. `widget`.
    pub name: String,
    /// Its plural, e.g. `widgets`.
    pub plural: String,
    /// The strategy.
    pub strategy: StrategyArg,
    /// Where verification state lives.
    pub verification: VerificationArg,
    /// Default of the replication feature flag.
    pub enabled_by_default: bool,
    /// How events are captured on the primary.
    pub events: EventsArg,
    /// The model table's SQL name, e.g. `widgets`.
    pub model_table: String,
    /// The primary-key field.
    pub id_field: Ident,
    /// The primary-key column.
    pub id_column: String,
    /// The primary-key type.
    pub id_type: IdType,
    /// The field holding the blob path.
    pub file_field: Ident,
    /// Its column.
    pub file_column: String,
    /// The registry table, e.g. `widget_registry`.
    pub registry: String,
    /// The foreign-key column naming the model record, e.g. `widget_id`.
    pub fk: String,
    /// The separate states table, e.g. `widget_states`.
    pub states_table: String,
    /// The inline verification `table!` module, e.g. `widget_verification`.
    pub inline_module: String,
    /// The `#[replicable(partition)]` field, if any.
    pub partition: Option<Partition>,
}

impl Model {
    /// The `table!` module of the verification state, if any: `<name>_states` or
    /// `<name>_verification`.
    pub(crate) fn verification_module(&self) -> Option<&str> {
        match self.verification {
            VerificationArg::Separate => Some(&self.states_table),
            VerificationArg::Inline => Some(&self.inline_module),
            VerificationArg::None => None,
        }
    }

    /// The SQL table holding verification state and its key column, if any.
    pub(crate) fn verification_table(&self) -> Option<(&str, &str)> {
        match self.verification {
            VerificationArg::Separate => Some((&self.states_table, &self.fk)),
            VerificationArg::Inline => Some((&self.model_table, &self.id_column)),
            VerificationArg::None => None,
        }
    }

    /// A name derived from the struct: `Widget` + `suffix`.
    pub(crate) fn type_ident(&self, suffix: &str) -> Ident {
        Ident::new(
            &format!("{}{suffix}", self.ident.unraw()),
            self.ident.span(),
        )
    }
}

/// Where a name came from, for the span and wording of its error.
enum Origin<'a> {
    /// Written as a literal in the attribute.
    Literal(&'a LitStr),
    /// Derived; `what` says from what (e.g. "derived from the struct name").
    Derived(&'a dyn ToTokens, &'a str),
}

/// Checks that `value` is a plain SQL identifier; pushes a spanned error otherwise.
fn check_ident(
    errors: &mut darling::error::Accumulator,
    role: &str,
    value: &str,
    origin: Origin<'_>,
) -> bool {
    let Some(problem) = sql_identifier_problem(value) else {
        return true;
    };
    let err = match origin {
        Origin::Literal(lit) => Error::custom(format!(
            "`{role}` must be a plain SQL identifier, but `{value}` is not: {problem}"
        ))
        .with_span(lit),
        Origin::Derived(tokens, what) => Error::custom(format!(
            "the {role} `{value}` ({what}) is not a plain SQL identifier: {problem}"
        ))
        .with_span(&tokens.to_token_stream()),
    };
    errors.push(err);
    false
}

/// Checks that a name that becomes a `table!` module is a usable Rust identifier.
fn check_module(
    errors: &mut darling::error::Accumulator,
    role: &str,
    value: &str,
    at: &dyn ToTokens,
) -> bool {
    if syn::parse_str::<Ident>(value).is_ok() {
        return true;
    }
    errors.push(
        Error::custom(format!(
            "the {role} `{value}` is a Rust keyword, so its generated `table!` module cannot be \
             named after it; choose another name"
        ))
        .with_span(&at.to_token_stream()),
    );
    false
}

/// The last path segment of a type, when it is a plain path without arguments.
fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .and_then(|s| s.arguments.is_none().then(|| s.ident.to_string())),
        syn::Type::Group(g) => type_name(&g.elem),
        syn::Type::Paren(p) => type_name(&p.elem),
        _ => None,
    }
}

/// Validates the arguments against the item. Returns the model when nothing is wrong with the
/// parts it needs; every problem is pushed to `errors` either way.
pub(crate) fn validate(
    args: StructArgs,
    input: &Input,
    errors: &mut darling::error::Accumulator,
) -> Option<Model> {
    if !args.strategy_written {
        errors.push(
            Error::custom("missing `strategy`: write `#[replicable(strategy = \"blob\")]`")
                .with_span(&span_tokens(Span::call_site())),
        );
    }
    let (Some(ident), Some(fields)) = (input.ident.as_ref(), input.fields.as_ref()) else {
        return None;
    };
    let struct_name = ident.unraw().to_string();
    let mut ok = !input.has_generics;

    // The replicable name and the names derived from it.
    let name = match &args.name {
        Some(lit) => {
            let v = lit.value();
            ok &= check_ident(errors, "name", &v, Origin::Literal(lit));
            v
        }
        None => {
            let v = snake_name(&struct_name);
            ok &= check_ident(
                errors,
                "replicable name",
                &v,
                Origin::Derived(
                    ident,
                    "the snake case of the struct name; set `name = \"...\"`",
                ),
            );
            v
        }
    };
    let name_origin: &dyn ToTokens = match &args.name {
        Some(lit) => lit,
        None => ident,
    };
    let registry = match &args.registry {
        Some(lit) => {
            let v = lit.value();
            ok &= check_ident(errors, "registry", &v, Origin::Literal(lit))
                && check_module(errors, "registry", &v, lit);
            v
        }
        None => format!("{name}_registry"),
    };
    let fk = format!("{name}_id");
    let states_table = format!("{name}_states");
    let inline_module = format!("{name}_verification");
    let verification = args.verification.unwrap_or(VerificationArg::Separate);
    // Derived names: only worth checking when the name itself is fine (one mistake, one error).
    if sql_identifier_problem(&name).is_none() {
        let hint = "derived from the replicable name; choose a shorter `name`";
        let mut derived = vec![("foreign-key column", &fk)];
        if args.registry.is_none() {
            derived.push(("registry table", &registry));
        }
        match verification {
            VerificationArg::Separate => derived.push(("states table", &states_table)),
            VerificationArg::Inline => derived.push(("verification table module", &inline_module)),
            VerificationArg::None => {}
        }
        for (role, value) in derived {
            if !check_ident(errors, role, value, Origin::Derived(name_origin, hint)) {
                ok = false;
                break;
            }
        }
    }

    // The model table.
    let model_table = match &input.table_name {
        Some(path) => {
            let last = path
                .segments
                .last()
                .map(|s| s.ident.unraw().to_string())
                .unwrap_or_default();
            ok &= check_ident(
                errors,
                "model table",
                &last,
                Origin::Derived(path, "from `#[diesel(table_name = ...)]`"),
            );
            last
        }
        None => {
            let v = diesel_table_name(&struct_name);
            ok &= check_ident(
                errors,
                "model table",
                &v,
                Origin::Derived(
                    ident,
                    "Diesel's default for this struct name; set `#[diesel(table_name = ...)]`",
                ),
            );
            v
        }
    };
    if registry == model_table
        || (verification == VerificationArg::Separate && registry == states_table)
    {
        let other = if registry == model_table {
            "model table"
        } else {
            "states table"
        };
        let at: &dyn ToTokens = match &args.registry {
            Some(lit) => lit,
            None => name_origin,
        };
        errors.push(
            Error::custom(format!(
                "the registry table `{registry}` would have the same name as the {other}; \
                 choose another `registry`"
            ))
            .with_span(&at.to_token_stream()),
        );
        ok = false;
    }

    // The primary key.
    let mut id = None;
    for field in fields {
        if let Some(span) = field.opts.id {
            if id.is_some() {
                errors.push(
                    Error::custom(
                        "more than one field is marked `#[replicable(id)]`; mark only the \
                         primary-key field",
                    )
                    .with_span(&span_tokens(span)),
                );
                ok = false;
            } else {
                id = Some(field);
            }
        }
    }
    let id = id.or_else(|| fields.iter().find(|f| f.ident.unraw() == "id"));
    // A misspelt `#[replicable(id)]` / `#[replicable(file)]` was reported where it was written;
    // saying the option is missing as well would make one mistake two errors.
    let misspelt = |option: &str| fields.iter().any(|f| f.opts.misspelt == Some(option));
    let id_parts = match id {
        None if misspelt("id") => None,
        None => {
            errors.push(
                Error::custom(
                    "no primary-key field: add a field named `id`, or mark the key field with \
                     `#[replicable(id)]`",
                )
                .with_span(ident),
            );
            None
        }
        Some(field) => {
            let id_type = match type_name(&field.ty).as_deref() {
                Some("i64") => Some(IdType::I64),
                Some("i32") => Some(IdType::I32),
                _ => {
                    errors.push(
                        Error::custom(format!(
                            "the primary key `{}` must be `i64` or `i32` (SQL BIGINT or INTEGER)",
                            field.ident.unraw()
                        ))
                        .with_span(&field.ty),
                    );
                    None
                }
            };
            let column = field
                .column_name
                .clone()
                .unwrap_or_else(|| field.ident.unraw().to_string());
            let col_ok = check_ident(
                errors,
                "primary-key column",
                &column,
                Origin::Derived(&field.ident, "the id field's column"),
            );
            id_type
                .filter(|_| col_ok)
                .map(|t| (field.ident.clone(), column, t))
        }
    };

    // The file field (blob strategy).
    let mut file = None;
    if args.strategy == Some(StrategyArg::Blob) {
        for field in fields {
            if let Some(span) = field.opts.file {
                if file.is_some() {
                    errors.push(
                        Error::custom(
                            "more than one field is marked `#[replicable(file)]`; the blob \
                             strategy replicates one file per record",
                        )
                        .with_span(&span_tokens(span)),
                    );
                    ok = false;
                    continue;
                }
                file = Some(field);
                if type_name(&field.ty).as_deref() != Some("String") {
                    errors.push(
                        Error::custom(
                            "the `#[replicable(file)]` field must be a `String` holding the path \
                             relative to the blob store root",
                        )
                        .with_span(&field.ty),
                    );
                    ok = false;
                }
            }
        }
        if file.is_none() && !misspelt("file") {
            errors.push(
                Error::custom(
                    "strategy \"blob\" needs the field that holds the file's path: mark it with \
                     `#[replicable(file)]`",
                )
                .with_span(ident),
            );
        }
    }
    let file_parts = file.and_then(|f| {
        let column = f
            .column_name
            .clone()
            .unwrap_or_else(|| f.ident.unraw().to_string());
        check_ident(
            errors,
            "file column",
            &column,
            Origin::Derived(&f.ident, "the file field's column"),
        )
        .then(|| (f.ident.clone(), column))
    });

    let partition =
        partition::validate(fields, id.map(|f| &f.ident), file.map(|f| &f.ident), errors);
    ok &= partition.is_ok();

    let enabled_by_default = args.enabled_by_default.as_ref().is_none_or(|b| b.value);
    let strategy = args.strategy?;
    let (id_field, id_column, id_type) = id_parts?;
    let (file_field, file_column) = file_parts?;
    if !ok {
        return None;
    }
    Some(Model {
        ident: ident.clone(),
        vis: input.vis.clone(),
        plural: plural(&name),
        name,
        strategy,
        verification,
        enabled_by_default,
        events: args.events.unwrap_or(EventsArg::Triggers),
        model_table,
        id_field,
        id_column,
        id_type,
        file_field,
        file_column,
        registry,
        fk,
        states_table,
        inline_module,
        partition: partition.ok().flatten(),
    })
}

/// Tokens carrying `span`, so an error can be placed on it.
fn span_tokens(span: Span) -> proc_macro2::TokenStream {
    quote::quote_spanned!(span=> _)
}
