//! Arguments that carry secrets: their `Debug` and `Display` never show them, so an argument
//! struct printed with `{:?}` (a log line, a panic, `dbg!`) leaks nothing.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// A secret on the command line or in the environment (`--secret`, `--keys`): `Debug` and
/// `Display` print `***`; [`SecretArg::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretArg(String);

impl SecretArg {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretArg(s.to_owned()))
    }
}

impl From<&str> for SecretArg {
    fn from(s: &str) -> Self {
        SecretArg(s.to_owned())
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretArg(***)")
    }
}

impl fmt::Display for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A database URL (a SQLite path or `postgres://…`): `Debug` and `Display` hide a password
/// (`postgres://geo:***@db/geo`, `password=***`); it derefs to the whole URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, password included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// `url` with the password of its user info (`scheme://user:password@`), of a `password=`
/// query or key-value pair replaced by `***`.
fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let at = rest + at;
            if let Some(colon) = out[rest..at].find(':') {
                out.replace_range(rest + colon + 1..at, "***");
            }
        }
    }
    let mut search = 0;
    while let Some(i) = out[search..].find("password=") {
        let start = search + i + "password=".len();
        let end = out[start..]
            .find(['&', ' ', ';'])
            .map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
        search = start + 3;
    }
    out
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("empty: give a SQLite file path or a postgres:// URL".to_owned());
        }
        Ok(DatabaseUrl(s.to_owned()))
    }
}

impl Deref for DatabaseUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_nothing_else() {
        for (url, shown) in [
            (
                "postgres://geo:s3cr%40t@db:5432/geo",
                "postgres://geo:***@db:5432/geo",
            ),
            ("postgres://geo@db/geo", "postgres://geo@db/geo"),
            (
                "postgres://db/geo?user=geo&password=hunter2&sslmode=require",
                "postgres://db/geo?user=geo&password=***&sslmode=require",
            ),
            (
                "host=db user=geo password=hunter2 dbname=geo",
                "host=db user=geo password=*** dbname=geo",
            ),
            (
                "/var/lib/geo/primary.sqlite3",
                "/var/lib/geo/primary.sqlite3",
            ),
            (
                "postgres://a:b@c/d?password=e",
                "postgres://a:***@c/d?password=***",
            ),
        ] {
            let u: DatabaseUrl = url.parse().unwrap();
            assert_eq!(u.to_string(), shown);
            assert_eq!(format!("{u:?}"), format!("DatabaseUrl({shown:?})"));
            assert_eq!(&*u, url);
        }
        assert!("".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn a_secret_argument_never_prints() {
        let s: SecretArg = "abcdefghijklmnopqrstuvwxyz0123456789-_AB".parse().unwrap();
        assert_eq!(format!("{s:?} {s}"), "SecretArg(***) ***");
        assert_eq!(s.expose(), "abcdefghijklmnopqrstuvwxyz0123456789-_AB");
    }
}

#[cfg(test)]
mod args {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: crate::cli::NodeCommand,
    }

    const SECRET: &str = "abcdefghijklmnopqrstuvwxyz0123456789-_AB";

    #[test]
    fn no_argument_struct_prints_a_secret_in_debug() {
        let url = "postgres://geo:db-password-1@127.0.0.1/geo";
        let pair = format!("aaaaaaaaaaaaaaaaaaaa:{SECRET}");
        for argv in [
            vec![
                "x",
                "secondary",
                "--primary",
                "http://p",
                "--database-url",
                url,
                "--blob-dir",
                "/b",
                "--access-key",
                "aaaaaaaaaaaaaaaaaaaa",
                "--secret",
                SECRET,
            ],
            vec![
                "x",
                "primary",
                "--database-url",
                url,
                "--blob-dir",
                "/b",
                "--keys",
                &pair,
            ],
            vec![
                "x",
                "status",
                "--access-key",
                "aaaaaaaaaaaaaaaaaaaa",
                "--secret",
                SECRET,
            ],
            vec![
                "x",
                "resync",
                "--type",
                "widget",
                "--all",
                "--database-url",
                url,
            ],
            vec!["x", "flags", "list", "--database-url", url],
            vec![
                "x",
                "backfill",
                "--primary",
                "http://p",
                "--database-url",
                url,
                "--blob-dir",
                "/b",
                "--access-key",
                "aaaaaaaaaaaaaaaaaaaa",
                "--secret",
                SECRET,
            ],
        ] {
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let shown = format!("{cli:?} {cli:#?}");
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("db-password-1"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
}
