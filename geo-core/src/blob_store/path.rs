//! Blob paths: validated relative keys that cannot name anything outside a store's root.

use std::fmt;
use std::path::{Component, Path};

use super::TEMP_PREFIX;

/// Why a string is not a valid [`BlobPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPathProblem {
    /// The path is empty (or only `.` components).
    Empty,
    /// The path is absolute or has a drive/root prefix.
    Absolute,
    /// The path has a `..` component.
    ParentComponent,
    /// The path contains a NUL byte.
    Nul,
    /// The file name starts with [`TEMP_PREFIX`], reserved for temporary files.
    ReservedName,
}

impl fmt::Display for BlobPathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobPathProblem::Empty => "the path is empty",
            BlobPathProblem::Absolute => "the path must be relative to the blob store root",
            BlobPathProblem::ParentComponent => "the path must not contain `..`",
            BlobPathProblem::Nul => "the path must not contain a NUL byte",
            BlobPathProblem::ReservedName => {
                "file names starting with `.tmp_` are reserved for temporary files"
            }
        })
    }
}

/// A string that is not a valid [`BlobPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blob path {path:?}: {problem}")]
pub struct InvalidBlobPath {
    /// The rejected input.
    pub path: String,
    /// What is wrong with it.
    pub problem: BlobPathProblem,
}

/// A validated path relative to a blob store's root, normalized to `/`-separated components
/// with no `.`, no `..`, no empty components and no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobPath(String);

impl BlobPath {
    /// Validates and normalizes `path`. Refuses empty paths, absolute paths, `..` components,
    /// NUL bytes and file names starting with [`TEMP_PREFIX`]; drops `.` and empty components
    /// (`a/./b//c` becomes `a/b/c`).
    pub fn new(path: &str) -> Result<Self, InvalidBlobPath> {
        let bad = |problem| InvalidBlobPath {
            path: path.to_owned(),
            problem,
        };
        if path.contains('\0') {
            return Err(bad(BlobPathProblem::Nul));
        }
        if path.starts_with('/') || path.starts_with('\\') {
            return Err(bad(BlobPathProblem::Absolute));
        }
        let mut parts: Vec<&str> = Vec::new();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(part) => match part.to_str() {
                    Some(s) => parts.push(s),
                    // Unreachable from a &str, but never panic.
                    None => return Err(bad(BlobPathProblem::Absolute)),
                },
                Component::CurDir => {}
                Component::ParentDir => return Err(bad(BlobPathProblem::ParentComponent)),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(BlobPathProblem::Absolute));
                }
            }
        }
        match parts.last() {
            None => Err(bad(BlobPathProblem::Empty)),
            Some(name) if name.starts_with(TEMP_PREFIX) => Err(bad(BlobPathProblem::ReservedName)),
            Some(_) => Ok(BlobPath(parts.join("/"))),
        }
    }

    /// The normalized path, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalized path as a relative [`Path`].
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl fmt::Display for BlobPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BlobPath {
    type Err = InvalidBlobPath;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlobPath::new(s)
    }
}

impl TryFrom<&str> for BlobPath {
    type Error = InvalidBlobPath;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        BlobPath::new(s)
    }
}

impl AsRef<str> for BlobPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BlobPath {
        BlobPath::new(s).unwrap()
    }

    #[test]
    fn blob_path_validation() {
        assert_eq!(p("a/b.bin").as_str(), "a/b.bin");
        assert_eq!(p("./a//b/./c").as_str(), "a/b/c");
        let problem = |s: &str| BlobPath::new(s).unwrap_err().problem;
        assert_eq!(problem(""), BlobPathProblem::Empty);
        assert_eq!(problem("./."), BlobPathProblem::Empty);
        assert_eq!(problem("/abs"), BlobPathProblem::Absolute);
        assert_eq!(problem("a/../../x"), BlobPathProblem::ParentComponent);
        assert_eq!(problem("a/.."), BlobPathProblem::ParentComponent);
        assert_eq!(problem("a\0b"), BlobPathProblem::Nul);
        assert_eq!(problem("dir/.tmp_123"), BlobPathProblem::ReservedName);
        // Only the file name is reserved; a directory may be called anything.
        assert_eq!(p(".tmp_dir/x").as_str(), ".tmp_dir/x");
        let e = BlobPath::new("/etc/passwd").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid blob path \"/etc/passwd\": the path must be relative to the blob store root"
        );
    }
}
