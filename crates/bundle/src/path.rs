//! Path rules for files inside a bundle. A path is relative UTF-8 with `/` separators, unique in
//! its bundle, never `..`, never absolute, never containing NUL or control characters (they would
//! be unsafe to unpack and unsafe to put in a MIME header).

use std::collections::HashSet;

use crate::error::{BundleError, PathProblem, Result};
use crate::limits::{MAX_PATH_BYTES, MAX_PATH_COMPONENT_BYTES};

/// Checks one path against the bundle path rules.
pub fn validate_path(path: &str) -> Result<()> {
    let fail = |problem| {
        Err(BundleError::InvalidPath {
            path: path.to_owned(),
            problem,
        })
    };
    if path.is_empty() {
        return fail(PathProblem::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return fail(PathProblem::TooLong {
            bytes: path.len(),
            limit_bytes: MAX_PATH_BYTES,
        });
    }
    if path.starts_with('/') {
        return fail(PathProblem::Absolute);
    }
    if path.contains('\0') {
        return fail(PathProblem::Nul);
    }
    if path.chars().any(char::is_control) {
        return fail(PathProblem::ControlCharacter);
    }
    for component in path.split('/') {
        match component {
            "" => return fail(PathProblem::EmptyComponent),
            "." => return fail(PathProblem::DotComponent),
            ".." => return fail(PathProblem::ParentComponent),
            c if c.len() > MAX_PATH_COMPONENT_BYTES => {
                return fail(PathProblem::ComponentTooLong {
                    bytes: c.len(),
                    limit_bytes: MAX_PATH_COMPONENT_BYTES,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The set of paths already in a bundle, which refuses duplicates and file/directory conflicts
/// (`a` and `a/b` cannot both be files: the bundle could not be unpacked).
#[derive(Debug, Default)]
pub struct PathSet {
    files: HashSet<String>,
    dirs: HashSet<String>,
}

impl PathSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Validates `path` and records it.
    pub fn insert(&mut self, path: &str) -> Result<()> {
        validate_path(path)?;
        if self.files.contains(path) {
            return Err(BundleError::DuplicatePath {
                path: path.to_owned(),
            });
        }
        if self.dirs.contains(path) {
            let other = self
                .files
                .iter()
                .find(|f| f.starts_with(path) && f.as_bytes().get(path.len()) == Some(&b'/'))
                .cloned()
                .unwrap_or_else(|| format!("{path}/…"));
            return Err(BundleError::PathConflict {
                path: path.to_owned(),
                other,
            });
        }
        let ancestors: Vec<&str> = path
            .match_indices('/')
            .map(|(slash, _)| &path[..slash])
            .collect();
        if let Some(file) = ancestors.iter().find(|a| self.files.contains(**a)) {
            return Err(BundleError::PathConflict {
                path: path.to_owned(),
                other: (*file).to_owned(),
            });
        }
        for ancestor in ancestors {
            self.dirs.insert(ancestor.to_owned());
        }
        self.files.insert(path.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn problem(path: &str) -> PathProblem {
        match validate_path(path) {
            Err(BundleError::InvalidPath { problem, .. }) => problem,
            other => panic!("expected InvalidPath for {path:?}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "pages/0001.tif",
            "ünïcödé/頁.jpg",
            "a b/c-d_e.f",
            "...",
            "a..b",
        ] {
            validate_path(p).unwrap();
        }
    }

    #[test]
    fn rejects_bad_paths_with_the_reason() {
        assert_eq!(problem(""), PathProblem::Empty);
        assert_eq!(problem("/etc/passwd"), PathProblem::Absolute);
        assert_eq!(problem("a/../b"), PathProblem::ParentComponent);
        assert_eq!(problem(".."), PathProblem::ParentComponent);
        assert_eq!(problem("./a"), PathProblem::DotComponent);
        assert_eq!(problem("a//b"), PathProblem::EmptyComponent);
        assert_eq!(problem("a/"), PathProblem::EmptyComponent);
        assert_eq!(problem("a\0b"), PathProblem::Nul);
        assert_eq!(problem("a\r\nb"), PathProblem::ControlCharacter);
        assert!(matches!(
            problem(&"x".repeat(MAX_PATH_BYTES + 1)),
            PathProblem::TooLong { .. }
        ));
        assert!(matches!(
            problem(&"x".repeat(MAX_PATH_COMPONENT_BYTES + 1)),
            PathProblem::ComponentTooLong { .. }
        ));
    }

    #[test]
    fn path_set_refuses_duplicates_and_conflicts() {
        let mut set = PathSet::new();
        set.insert("a/b").unwrap();
        assert!(matches!(
            set.insert("a/b"),
            Err(BundleError::DuplicatePath { .. })
        ));
        assert!(matches!(
            set.insert("a"),
            Err(BundleError::PathConflict { .. })
        ));
        assert!(matches!(
            set.insert("a/b/c"),
            Err(BundleError::PathConflict { .. })
        ));
        set.insert("a/c").unwrap();
        set.insert("ab").unwrap();
        assert_eq!(set.len(), 3);
    }
}
