//! `status`: asks a site for its status and prints it (exit 1 when unhealthy).

use std::process::ExitCode;

use anyhow::{Context, Result};
use geo_diesel::geo_core::status::ReplicableStatuses;

use super::{ClientTlsArgs, SecretArg};
use crate::api::NodeStatus;
use crate::auth::Credentials;
use crate::client::{HttpConfig, NodeClient};

/// `status`.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct StatusArgs {
    /// The site's base URL.
    #[arg(long, env = "GEO_NODE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An access key the site accepts.
    #[arg(long, env = "GEO_ACCESS_KEY")]
    pub access_key: String,
    /// Its secret (prefer the environment variable).
    #[arg(long, env = "GEO_SECRET", hide_env_values = true)]
    pub secret: SecretArg,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
    /// How the site is verified.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

pub(super) fn run_status(args: StatusArgs) -> Result<ExitCode> {
    let creds = Credentials::new(&args.access_key, args.secret.expose())
        .context("--access-key/--secret (GEO_ACCESS_KEY/GEO_SECRET)")?;
    let client = NodeClient::try_new(args.tls.apply(HttpConfig::new(&args.url, creds)))
        .with_context(|| format!("--url {}", args.url))?;
    let status = client.status().context("asking the site's status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render_status(&status));
    }
    Ok(if status.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A status as a short table per role: the event log position, then every per-type field that
/// applies, by name.
pub fn render_status(status: &NodeStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut sites = String::new();
    let _ = writeln!(out, "{} ({}): {}", status.name, status.role, status.health);
    let show = |v: Option<i64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
    let mut section = |role: &str, lines: Vec<(&str, String)>, types: &ReplicableStatuses| {
        let _ = writeln!(out, "{role}:");
        for (k, v) in lines {
            let _ = writeln!(out, "  {k}: {v}");
        }
        let mut fields: Vec<(String, serde_json::Value)> =
            types.fields().filter(|(_, v)| !v.is_null()).collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in fields {
            let _ = writeln!(out, "  {k}: {v}");
        }
    };
    if let Some(p) = &status.primary {
        let mut lines = Vec::new();
        if let Some(last) = p.last_event_id {
            lines.push(("last_event_id", show(last)));
        }
        if let Some(pruned) = p.event_log_pruned_through {
            lines.push(("event_log_pruned_through", pruned.to_string()));
        }
        section("primary", lines, &p.replicables);
        // GitLab's Sites page: every secondary this primary knows, with its lag.
        if !p.secondaries.is_empty() {
            let _ = writeln!(sites, "secondaries:");
        }
        for k in &p.secondaries {
            let _ = writeln!(
                sites,
                "  {}: consumed {}, {} events behind, seen {} s ago{}{}",
                k.name,
                show(k.consumed_event_id),
                k.events_behind,
                k.seconds_since_seen,
                if k.stale { ", stale" } else { "" },
                if k.pruned_past {
                    ", pruned past it"
                } else {
                    ""
                },
            );
        }
    }
    if let Some(s) = &status.secondary {
        let mut lines = vec![("last_event_id", show(s.last_event_id))];
        if let Some(c) = &s.cursor {
            lines.push(("cursor_last_event_id", c.cursor_last_event_id.to_string()));
            lines.push(("open_gaps_count", c.open_gaps_count.to_string()));
        }
        lines.push((
            "cursor_skipped_events_count",
            s.cursor_skipped_events_count.to_string(),
        ));
        if s.events_pruned_recoveries > 0 {
            lines.push((
                "events_pruned_recoveries",
                s.events_pruned_recoveries.to_string(),
            ));
        }
        if let Some(r) = &s.last_events_pruned {
            lines.push((
                "last_events_pruned",
                format!(
                    "at {}: pruned through {}, consumed {}, continued from {}",
                    r.at.to_rfc3339(),
                    r.pruned_through,
                    r.consumed,
                    r.cursor
                ),
            ));
        }
        section("secondary", lines, &s.replicables);
    }
    out.push_str(&sites);
    if !status.replicables.is_empty() {
        let _ = writeln!(out, "replicables: {}", status.replicables.join(", "));
    }
    out
}
