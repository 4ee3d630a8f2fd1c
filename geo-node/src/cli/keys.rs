//! `keys generate`: a secondary's site key or an operator's admin token, and reading a site's
//! keys (`--keys-file`, `--keys`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::SecretArg;
use crate::auth::{AdminToken, Credentials, KeyRing, Scope};

/// `keys …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysAction {
    /// Print a new access key and secret for a secondary (as `export GEO_ACCESS_KEY=…` and
    /// `export GEO_SECRET=…` lines, ready for `eval`).
    ///
    /// With `--admin`: an operator's admin token for GraphQL and the admin page instead, printed
    /// as `export GEO_ADMIN_TOKEN=…`; the keys file keeps only its SHA-256.
    Generate {
        /// Also append the key (`ACCESS_KEY SECRET NAME`, or `admin SCOPE SHA256 NAME`) to this
        /// keys file (left mode 0600, even when it existed).
        #[arg(long)]
        append_to: Option<PathBuf>,
        /// A name for the key in the keys file (default `secondary`, or `admin`).
        #[arg(long)]
        name: Option<String>,
        /// Generate an operator's admin token instead of a secondary's site key.
        #[arg(long)]
        admin: bool,
        /// With `--admin`: a token that may query but not change anything.
        #[arg(long, requires = "admin")]
        read_only: bool,
    },
}

impl KeysAction {
    /// Runs the action.
    pub fn run(self) -> Result<ExitCode> {
        match self {
            KeysAction::Generate {
                append_to,
                name,
                admin,
                read_only,
            } => {
                if admin {
                    let scope = if read_only { Scope::Read } else { Scope::Admin };
                    admin_token_generate(append_to, name.as_deref().unwrap_or("admin"), scope)
                } else {
                    keys_generate(append_to, name.as_deref().unwrap_or("secondary"))
                }
            }
        }
    }
}

/// Reads the primary's keys from `--keys-file` and `--keys`.
pub fn load_keys(file: Option<&std::path::Path>, inline: &[SecretArg]) -> Result<KeyRing> {
    let mut ring = match file {
        Some(f) => KeyRing::load(f)?,
        None => KeyRing::new(),
    };
    for (i, k) in inline.iter().enumerate() {
        let (a, s) = k
            .expose()
            .split_once(':')
            .with_context(|| format!("--keys entry {} is not ACCESS_KEY:SECRET", i + 1))?;
        ring.insert(
            Credentials::new(a.trim(), s.trim())
                .with_context(|| format!("--keys entry {}", i + 1))?,
        );
    }
    Ok(ring)
}

/// Appends `line` to the keys file at `path`, which is left mode 0600 whether it existed or not.
fn append_key_line(path: &std::path::Path, line: &str) -> Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // The mode above applies only to a file this call creates: an existing one is made 0600
    // too, before a secret is written to it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} readable by its owner only", path.display()))?;
    }
    writeln!(f, "{line}")?;
    eprintln!("appended the key to {}", path.display());
    Ok(())
}

fn keys_generate(append_to: Option<PathBuf>, name: &str) -> Result<ExitCode> {
    let creds = Credentials::generate();
    if let Some(path) = append_to {
        let name = name.split_whitespace().collect::<Vec<_>>().join("_");
        append_key_line(
            &path,
            &format!("{} {} {name}", creds.access_key, creds.secret.expose()),
        )?;
    }
    println!("export GEO_ACCESS_KEY={}", creds.access_key);
    println!("export GEO_SECRET={}", creds.secret.expose());
    Ok(ExitCode::SUCCESS)
}

fn admin_token_generate(append_to: Option<PathBuf>, name: &str, scope: Scope) -> Result<ExitCode> {
    let token = AdminToken::generate();
    match append_to {
        Some(path) => append_key_line(&path, &token.keys_file_line(scope, name))?,
        None => eprintln!(
            "add this line to the site's keys file (--keys-file):\n{}",
            token.keys_file_line(scope, name)
        ),
    }
    println!("export GEO_ADMIN_TOKEN={}", token.expose());
    Ok(ExitCode::SUCCESS)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn appending_to_an_existing_keys_file_leaves_it_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# keys\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::append_key_line(&path, "line").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# keys\nline\n");
        // A new file is created 0600 too.
        let new = dir.path().join("new");
        super::append_key_line(&new, "line").unwrap();
        let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
