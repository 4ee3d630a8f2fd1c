//! Registration of the descriptor with the inventory, so `geo_core::replicables()` finds it.

use proc_macro2::TokenStream;
use quote::quote;

use super::private;
use crate::valid::Model;

/// `inventory::submit!` of `<Widget as Replicable>::DESCRIPTOR`.
pub(crate) fn expand(model: &Model) -> TokenStream {
    let p = private();
    let ident = &model.ident;
    quote! {
        #p::inventory::submit! {
            #p::Registration(<#ident as #p::geo_core::Replicable>::DESCRIPTOR)
        }
    }
}
