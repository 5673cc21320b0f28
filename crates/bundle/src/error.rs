//! The bundle crate's error type. Every variant names the file (or the part of the bundle) and
//! the problem, so a message can be shown to a person as it is.

use std::io;

/// Why a path cannot be used inside a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    TooLong { bytes: usize, limit_bytes: usize },
    ComponentTooLong { bytes: usize, limit_bytes: usize },
    Absolute,
    ParentComponent,
    DotComponent,
    EmptyComponent,
    Nul,
    ControlCharacter,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathProblem::Empty => write!(f, "the path is empty"),
            PathProblem::TooLong { bytes, limit_bytes } => {
                write!(
                    f,
                    "the path is {bytes} bytes long; the limit is {limit_bytes}"
                )
            }
            PathProblem::ComponentTooLong { bytes, limit_bytes } => write!(
                f,
                "a path component is {bytes} bytes long; the limit is {limit_bytes}"
            ),
            PathProblem::Absolute => write!(
                f,
                "absolute paths are not allowed; use a path relative to the bundle root"
            ),
            PathProblem::ParentComponent => write!(f, "`..` components are not allowed"),
            PathProblem::DotComponent => write!(f, "`.` components are not allowed"),
            PathProblem::EmptyComponent => write!(
                f,
                "empty components (`//` or a trailing `/`) are not allowed"
            ),
            PathProblem::Nul => write!(f, "NUL bytes are not allowed"),
            PathProblem::ControlCharacter => write!(f, "control characters are not allowed"),
        }
    }
}

/// Everything that can go wrong writing or reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("invalid path {path:?}: {problem}")]
    InvalidPath { path: String, problem: PathProblem },

    #[error("path {path:?} is not valid UTF-8; bundle paths must be UTF-8")]
    NonUtf8Path { path: String },

    #[error("duplicate path {path:?}: every file in a bundle needs a unique path")]
    DuplicatePath { path: String },

    #[error(
        "path {path:?} conflicts with {other:?}: a path cannot be both a file and a directory"
    )]
    PathConflict { path: String, other: String },

    #[error("too many files: the limit is {limit} files per bundle; split the collection into several bundles")]
    TooManyFiles { limit: u64 },

    #[error("invalid content type {content_type:?} for {path:?}: expected `type/subtype` in printable ASCII, at most {limit_bytes} bytes")]
    InvalidContentType {
        path: String,
        content_type: String,
        limit_bytes: usize,
    },

    #[error("file {path:?} declared {declared_bytes} bytes but {actual_bytes} were supplied")]
    LengthMismatch {
        path: String,
        declared_bytes: u64,
        actual_bytes: u64,
    },

    #[error(
        "file {path:?} has SHA-256 {actual} but {expected} was expected: its bytes are corrupt"
    )]
    Sha256Mismatch {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("bundle is too large: {bytes} bytes exceeds the limit of {limit_bytes}")]
    BundleTooLarge { bytes: u64, limit_bytes: u64 },

    #[error("bad bundle trailer: {reason}; the file is not a complete bundle (truncated or not a Bit Mountain bundle)")]
    BadTrailer { reason: String },

    #[error("bad bundle index: {reason}")]
    BadIndex { reason: String },

    #[error("bad MIME structure at byte {offset}: {reason}")]
    BadStructure { offset: u64, reason: String },

    #[error("part header of {part}: {reason}")]
    BadPartHeader { part: String, reason: String },

    #[error("bundle is truncated: needed bytes {offset}..{end} but it is {len_bytes} bytes long")]
    Truncated {
        offset: u64,
        end: u64,
        len_bytes: u64,
    },

    #[error("no file {path:?} in this bundle")]
    FileNotFound { path: String },

    #[error("range {offset}+{len_bytes} is outside file {path:?} of {file_bytes} bytes")]
    RangeOutOfBounds {
        path: String,
        offset: u64,
        len_bytes: u64,
        file_bytes: u64,
    },

    #[error("writer misuse: {reason}")]
    Misuse { reason: &'static str },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl BundleError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        BundleError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = BundleError> = std::result::Result<T, E>;
