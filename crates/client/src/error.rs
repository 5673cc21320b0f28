//! The client's error type.

use std::path::PathBuf;

use bitmountain_proto::error_kind::{kind_header, ErrorKind};

/// What went wrong, with what a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A node answered with an error (its message says what to do).
    #[error("{message} [{kind} from node {node}]")]
    Node {
        /// Stable kind (`unknown_bundle`, `unknown_path`, `bad_path`, ...).
        kind: String,
        code: tonic::Code,
        message: String,
        node: String,
    },
    /// The node speaks TLS and this client was given no CA.
    #[error("{}", bitmountain_proto::connect::needs_ca_message(node))]
    TlsRequired { node: String },
    /// No node could be reached.
    #[error("no node answered (tried {tried}): {last}. Is the cluster running? (`bitmountain dev` starts a local one; set --cluster or BITMOUNTAIN_CLUSTER)")]
    Unreachable { tried: String, last: String },
    /// A local file could not be read or written.
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The caller's input is not usable.
    #[error("{0}")]
    BadInput(String),
    /// The bytes received do not match what the node said they are.
    #[error("integrity check failed: {0}")]
    Integrity(String),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// The stable kind of a node's error, if this is one: an [`ErrorKind`]'s name, or one of a
    /// newer node this client does not know.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Node { kind, .. } => Some(kind),
            ClientError::TlsRequired { .. } => Some(ErrorKind::TlsRequired.as_str()),
            _ => None,
        }
    }

    /// From a status, telling a node's answer (it carries our error-kind header) from a
    /// transport failure (refused, reset, timed out before any answer).
    pub(crate) fn from_status(node: &str, status: &tonic::Status) -> (Self, bool) {
        let kind = kind_header(status);
        // Our nodes tag every status they send; an untagged one came from the connection
        // (refused, reset, a failed TLS handshake).
        let transport = kind.is_none()
            && matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::Internal
            );
        (
            ClientError::Node {
                // The text as sent (it may name a kind of a newer node), else the code's name.
                kind: kind
                    .unwrap_or(ErrorKind::Grpc(status.code()).as_str())
                    .to_owned(),
                code: status.code(),
                message: status.message().to_owned(),
                node: node.to_owned(),
            },
            transport,
        )
    }
}
