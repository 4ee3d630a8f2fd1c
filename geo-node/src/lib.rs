//! # geo-node
//!
//! The network face of a Geo site: the HTTP API a primary serves to its secondaries
//! ([`server`]), authentication between sites as GitLab Geo does it ([`auth`]), the HTTP
//! [`PrimarySource`](geo_diesel::geo_core::source::PrimarySource) a secondary replicates
//! through ([`client::HttpSource`]), status and Prometheus metrics ([`metrics`]), and the
//! HTTPS on the server side ([`tls`]), the blob stores a site names on its command line, a
//! directory or an S3-compatible bucket ([`store`]), the
//! `primary` / `secondary` / `status` / `keys` commands an application mounts in its own CLI
//! ([`cli`]), and the operator's `resync` / `reverify` / `flags` ([`ops`]).

pub mod admin;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod graphql;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod store;
pub mod tls;

pub use auth::{AccessKey, Credentials, KeyRing, Secret};
pub use client::{HttpConfig, HttpSource, NodeClient};
pub use server::{ApiError, NodeState, PrimaryService, SecondaryService, ServerHandle, router};
