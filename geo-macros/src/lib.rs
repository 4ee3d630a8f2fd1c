//! The `#[replicable]` attribute. See `geo_diesel::replicable` for its documentation.
use proc_macro::TokenStream;

/// Placeholder until the attribute lands.
#[proc_macro_attribute]
pub fn replicable(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}
