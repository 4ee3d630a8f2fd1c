//! Parsing of the attribute arguments: the struct-level `#[replicable(...)]` keys and the
//! field-level `#[replicable(file)]` / `#[replicable(id)]` / `#[replicable(partition)]` options.
//!
//! Parsing records what was written, with spans; it accumulates every error and never returns
//! early. Whether the combination makes sense is decided in [`crate::valid`].

use darling::ast::NestedMeta;
use darling::{Error, FromMeta};
use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, Lit, LitBool, LitStr, Meta};

use crate::names::did_you_mean;

/// The struct-level keys, in the order the documentation lists them.
pub(crate) const STRUCT_KEYS: &[&str] = &[
    "strategy",
    "registry",
    "name",
    "verification",
    "enabled_by_default",
    "events",
];

/// The field-level options.
pub(crate) const FIELD_KEYS: &[&str] = &["file", "id", "partition"];

/// `strategy = "..."`: how the data is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrategyArg {
    /// `"blob"`: one file in a blob store.
    Blob,
}

impl StrategyArg {
    pub(crate) const VALID: &'static [&'static str] = &["blob"];

    /// The value as written in the attribute.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            StrategyArg::Blob => "blob",
        }
    }
}

impl FromMeta for StrategyArg {
    fn from_string(value: &str) -> darling::Result<Self> {
        match value {
            "blob" => Ok(StrategyArg::Blob),
            "repository" => Err(Error::custom(
                "strategy `repository` (git repositories) is planned but not supported yet; \
                 the only strategy today is `blob`",
            )),
            other => Err(Error::custom(unknown_value_message(
                "strategy",
                other,
                Self::VALID,
            ))),
        }
    }

    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        string_expr(expr, "strategy", "blob")
            .and_then(|lit| Self::from_string(&lit.value()).map_err(|e| e.with_span(&lit)))
    }
}

/// `verification = "..."`: where the primary keeps verification state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerificationArg {
    /// `"separate"`: a `<name>_states` table keyed by the model id.
    Separate,
    /// `"inline"`: columns on the model table.
    Inline,
    /// `"none"`: no verification.
    None,
}

impl VerificationArg {
    pub(crate) const VALID: &'static [&'static str] = &["separate", "inline", "none"];
}

impl FromMeta for VerificationArg {
    fn from_string(value: &str) -> darling::Result<Self> {
        match value {
            "separate" => Ok(VerificationArg::Separate),
            "inline" => Ok(VerificationArg::Inline),
            "none" => Ok(VerificationArg::None),
            other => Err(Error::custom(unknown_value_message(
                "verification",
                other,
                Self::VALID,
            ))),
        }
    }

    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        string_expr(expr, "verification", "separate")
            .and_then(|lit| Self::from_string(&lit.value()).map_err(|e| e.with_span(&lit)))
    }
}

/// `events = "..."`: how the primary captures `created`/`updated`/`deleted` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventsArg {
    /// `"triggers"`: triggers on the model table write `geo_events`.
    Triggers,
    /// `"manual"`: the application calls `publish_*`.
    Manual,
}

impl EventsArg {
    pub(crate) const VALID: &'static [&'static str] = &["triggers", "manual"];
}

impl FromMeta for EventsArg {
    fn from_string(value: &str) -> darling::Result<Self> {
        match value {
            "triggers" => Ok(EventsArg::Triggers),
            "manual" => Ok(EventsArg::Manual),
            other => Err(Error::custom(unknown_value_message(
                "events",
                other,
                Self::VALID,
            ))),
        }
    }

    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        string_expr(expr, "events", "triggers")
            .and_then(|lit| Self::from_string(&lit.value()).map_err(|e| e.with_span(&lit)))
    }
}

/// The message for an unknown value of an enumerated key.
fn unknown_value_message(key: &str, value: &str, valid: &[&str]) -> String {
    let list = valid
        .iter()
        .map(|v| format!("`\"{v}\"`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut msg = format!("unknown {key} `\"{value}\"`; expected one of: {list}");
    if let Some(s) = did_you_mean(value, valid) {
        msg.push_str(&format!(" (did you mean `\"{s}\"`?)"));
    }
    msg
}

/// The string literal of `key = "..."`, or an error saying the correct form.
fn string_expr(expr: &Expr, key: &str, example: &str) -> darling::Result<LitStr> {
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        Expr::Group(g) => string_expr(&g.expr, key, example),
        other => Err(Error::custom(format!(
            "`{key}` takes a string literal: `{key} = \"{example}\"`"
        ))
        .with_span(other)),
    }
}

/// What was written in the struct-level attribute, each value with its span.
#[derive(Debug, Default)]
pub(crate) struct StructArgs {
    /// `strategy`, if given and valid.
    pub strategy: Option<StrategyArg>,
    /// Whether `strategy` was written at all (a bad value is an error already reported).
    pub strategy_written: bool,
    /// `registry = "..."`.
    pub registry: Option<LitStr>,
    /// `name = "..."`.
    pub name: Option<LitStr>,
    /// `verification = "..."`.
    pub verification: Option<VerificationArg>,
    /// `enabled_by_default = ...`.
    pub enabled_by_default: Option<LitBool>,
    /// `events = "..."`, if given and valid.
    pub events: Option<EventsArg>,
}

/// The key of a nested meta item as a string, when it is a single identifier.
fn key_of(meta: &Meta) -> Option<String> {
    meta.path().get_ident().map(|i| i.to_string())
}

/// Parses the struct-level arguments. Every mistake is pushed to `errors`.
pub(crate) fn parse_struct_args(
    items: &[NestedMeta],
    errors: &mut darling::error::Accumulator,
) -> StructArgs {
    let mut args = StructArgs::default();
    let mut seen: Vec<&'static str> = Vec::new();
    for item in items {
        let meta = match item {
            NestedMeta::Meta(m) => m,
            NestedMeta::Lit(lit) => {
                errors.push(
                    Error::custom(
                        "expected `key = value`, e.g. `#[replicable(strategy = \"blob\")]`",
                    )
                    .with_span(lit),
                );
                continue;
            }
        };
        let Some(key) = key_of(meta) else {
            errors
                .push(unknown_key(&path_text(meta.path()), STRUCT_KEYS, "").with_span(meta.path()));
            continue;
        };
        let Some(&known) = STRUCT_KEYS.iter().find(|k| **k == key) else {
            let hint = if FIELD_KEYS.contains(&key.as_str()) {
                "; `file`, `id` and `partition` are field options: write `#[replicable(file)]` on the field"
            } else {
                ""
            };
            errors.push(unknown_key(&key, STRUCT_KEYS, hint).with_span(meta.path()));
            continue;
        };
        if seen.contains(&known) {
            errors.push(
                Error::custom(format!("duplicate key `{known}`: give it only once"))
                    .with_span(meta.path()),
            );
            continue;
        }
        seen.push(known);
        match known {
            "strategy" => {
                args.strategy_written = true;
                if let Some(value) = name_value(meta, "strategy", "\"blob\"", errors) {
                    args.strategy = errors.handle(StrategyArg::from_expr(value));
                }
            }
            "verification" => {
                if let Some(value) = name_value(meta, "verification", "\"separate\"", errors) {
                    args.verification = errors.handle(VerificationArg::from_expr(value));
                }
            }
            "events" => {
                if let Some(value) = name_value(meta, "events", "\"triggers\"", errors) {
                    args.events = errors.handle(EventsArg::from_expr(value));
                }
            }
            "registry" => {
                if let Some(value) = name_value(meta, "registry", "\"widget_registry\"", errors) {
                    args.registry =
                        errors.handle(string_expr(value, "registry", "widget_registry"));
                }
            }
            "name" => {
                if let Some(value) = name_value(meta, "name", "\"widget\"", errors) {
                    args.name = errors.handle(string_expr(value, "name", "widget"));
                }
            }
            "enabled_by_default" => {
                args.enabled_by_default = match meta {
                    // A bare `enabled_by_default` means `true`, like darling's bool flags.
                    Meta::Path(p) => Some(LitBool::new(true, p.span())),
                    _ => name_value(meta, "enabled_by_default", "false", errors)
                        .and_then(|value| errors.handle(bool_expr(value))),
                };
            }
            _ => {}
        }
    }
    args
}

fn bool_expr(expr: &Expr) -> darling::Result<LitBool> {
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.clone()),
        Expr::Group(g) => bool_expr(&g.expr),
        other => Err(Error::custom(
            "`enabled_by_default` takes a bool: `enabled_by_default = false` (no quotes)",
        )
        .with_span(other)),
    }
}

/// The value of `key = value`; for any other form, an error saying the correct one.
fn name_value<'m>(
    meta: &'m Meta,
    key: &str,
    example: &str,
    errors: &mut darling::error::Accumulator,
) -> Option<&'m Expr> {
    match meta {
        Meta::NameValue(nv) => Some(&nv.value),
        other => {
            errors.push(
                Error::custom(format!("`{key}` takes a value: `{key} = {example}`"))
                    .with_span(other),
            );
            None
        }
    }
}

/// "unknown key" with the list of valid keys and a suggestion.
fn unknown_key(key: &str, valid: &[&str], hint: &str) -> Error {
    let list = valid
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut msg = format!("unknown key `{key}` in #[replicable(...)]; expected one of: {list}");
    if let Some(s) = did_you_mean(key, valid) {
        msg.push_str(&format!(" (did you mean `{s}`?)"));
    }
    msg.push_str(hint);
    Error::custom(msg)
}

fn path_text(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// The options of one field's `#[replicable(...)]` attributes (a field may carry several).
#[derive(Debug, Default, Clone)]
pub(crate) struct FieldOpts {
    /// Span of `file`, when given.
    pub file: Option<Span>,
    /// Span of `id`, when given.
    pub id: Option<Span>,
    /// Span of `partition`, when given: the field selective sync selects on.
    pub partition: Option<Span>,
    /// The field option an unknown option most likely misspells (`fiel` → `file`). That
    /// mistake is reported already, so validation does not also report the option as missing.
    pub misspelt: Option<&'static str>,
}

/// Parses one field-level `#[replicable(...)]` attribute into `opts`.
pub(crate) fn parse_field_attr(
    attr: &syn::Attribute,
    opts: &mut FieldOpts,
    errors: &mut darling::error::Accumulator,
) {
    let list = match &attr.meta {
        Meta::List(list) => list,
        other => {
            errors.push(
                Error::custom("expected `#[replicable(file)]` or `#[replicable(id)]` on a field")
                    .with_span(other),
            );
            return;
        }
    };
    let Some(items) =
        errors.handle(NestedMeta::parse_meta_list(list.tokens.clone()).map_err(Error::from))
    else {
        return;
    };
    if items.is_empty() {
        errors.push(
            Error::custom("expected `#[replicable(file)]` or `#[replicable(id)]` on a field")
                .with_span(attr),
        );
    }
    for item in &items {
        let meta = match item {
            NestedMeta::Meta(Meta::Path(p)) => p,
            NestedMeta::Meta(m) => {
                let key = key_of(m).unwrap_or_default();
                // A malformed `file`/`id` still marks the field, so that the one mistake does
                // not also report "no file field".
                match key.as_str() {
                    "file" => opts.file = opts.file.or(Some(m.path().span())),
                    "id" => opts.id = opts.id.or(Some(m.path().span())),
                    "partition" => opts.partition = opts.partition.or(Some(m.path().span())),
                    _ => {}
                }
                let msg = if FIELD_KEYS.contains(&key.as_str()) {
                    format!("`{key}` takes no value: write `#[replicable({key})]`")
                } else if STRUCT_KEYS.contains(&key.as_str()) {
                    format!("`{key}` belongs on the struct's `#[replicable(...)]`, not on a field")
                } else {
                    unknown_field_option(&key, opts)
                };
                errors.push(Error::custom(msg).with_span(m));
                continue;
            }
            NestedMeta::Lit(lit) => {
                errors.push(
                    Error::custom("expected `file` or `id`, e.g. `#[replicable(file)]`")
                        .with_span(lit),
                );
                continue;
            }
        };
        let key = path_text(meta);
        let slot = match key.as_str() {
            "file" => &mut opts.file,
            "id" => &mut opts.id,
            "partition" => &mut opts.partition,
            other => {
                let msg = if STRUCT_KEYS.contains(&other) {
                    format!(
                        "`{other}` belongs on the struct's `#[replicable(...)]`, not on a field"
                    )
                } else {
                    unknown_field_option(other, opts)
                };
                errors.push(Error::custom(msg).with_span(meta));
                continue;
            }
        };
        if slot.is_some() {
            errors.push(
                Error::custom(format!("duplicate field option `{key}`: give it only once"))
                    .with_span(meta),
            );
        } else {
            *slot = Some(meta.span());
        }
    }
}

/// The message for an unknown field option; its likely meaning is remembered in `opts`.
fn unknown_field_option(key: &str, opts: &mut FieldOpts) -> String {
    let mut msg = format!(
        "unknown field option `{key}`; expected `file` (the field holding the blob path), `id` \
         (the primary-key field) or `partition` (the integer field selective sync selects on)"
    );
    if let Some(s) = did_you_mean(key, FIELD_KEYS) {
        msg.push_str(&format!(" (did you mean `{s}`?)"));
        opts.misspelt = opts.misspelt.or(Some(s));
    }
    msg
}
