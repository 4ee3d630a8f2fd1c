//! `#[replicable(partition)]` on an integer field and on an `Option` of one: the descriptor
//! names the column, the replicator gives the key as an `i64`.
use diesel::prelude::*;
use geo_diesel::geo_core::{Replicable, Replicator};
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
        tenant_id -> Integer,
    }
}

diesel::table! {
    notes (id) {
        id -> BigInt,
        path -> Text,
        namespace -> Nullable<SmallInt>,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob")]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
    #[replicable(partition)]
    pub tenant_id: i32,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = notes)]
#[replicable(strategy = "blob", verification = "none")]
pub struct Note {
    pub id: i64,
    #[replicable(file)]
    pub path: String,
    #[replicable(partition)]
    #[diesel(column_name = namespace)]
    pub ns: Option<i16>,
}

fn main() {
    let w = Widget {
        id: 1,
        file_path: "w/1".into(),
        tenant_id: 7,
    };
    assert_eq!(w.replicator().partition(), Some(7));
    assert_eq!(Widget::DESCRIPTOR.partition(), Some("tenant_id"));
    let mut n = Note {
        id: 2,
        path: "n/2".into(),
        ns: Some(-3),
    };
    assert_eq!(n.replicator().partition(), Some(-3));
    n.ns = None;
    assert_eq!(n.replicator().partition(), None);
    assert_eq!(Note::DESCRIPTOR.tables.partition, Some("namespace"));
}
