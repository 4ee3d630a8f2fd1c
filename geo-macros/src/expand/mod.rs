//! Expansion: one module per generated artefact. Expansion never reports a user error; every
//! check happened in [`crate::valid`].

pub(crate) mod migration;
pub(crate) mod registration;
pub(crate) mod registry;
pub(crate) mod replicator;
pub(crate) mod verification;

use proc_macro2::TokenStream;
use quote::quote;
use syn::Item;

use crate::valid::Model;

/// The runtime path every generated item names: `::geo_diesel::__private`.
pub(crate) fn private() -> TokenStream {
    quote!(::geo_diesel::__private)
}

/// The struct (re-emitted unchanged but for our field helpers) followed by everything generated
/// for it.
pub(crate) fn expand(item: &Item, model: &Model) -> TokenStream {
    let replicator = replicator::expand(model);
    let registry = registry::expand(model);
    let verification = verification::expand(model);
    let registration = registration::expand(model);
    quote! {
        #item
        #replicator
        #registry
        #verification
        #registration
    }
}
