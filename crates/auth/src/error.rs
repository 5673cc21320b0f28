//! `AuthError`: every refusal of access control, and its one conversion into a `tonic::Status`
//! with the kind header (`unauthenticated`, `permission_denied`, ...).

use bitmountain_proto::ErrorKind;

use crate::permission::{Permission, Role};
use crate::token::TokenError;

/// Why a request, a token or a scope was refused. Messages say what was missing and name the
/// permission, certificate role or scope label needed; they never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is missing, malformed, unknown, expired or revoked.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The request carried no credentials at all (`what`: `token` or `certificate`).
    #[error("missing {what}: {method} needs {needs}")]
    NoCredentials {
        what: &'static str,
        method: String,
        needs: String,
    },
    /// A token whose role lacks the permission the method or action needs.
    #[error(
        "permission denied: {who} lacks permission `{permission}`, which {what} needs (roles with it: {roles})",
        roles = role_list(.permission.roles())
    )]
    MissingPermission {
        who: String,
        permission: Permission,
        what: String,
    },
    /// A caller of the wrong kind: a token on a method only members or nodes call, a
    /// certificate of the wrong role, or one without a role.
    #[error("permission denied: {method} needs {needs}; {who} cannot call it")]
    WrongCaller {
        who: String,
        method: String,
        needs: String,
    },
    /// A scoped token and a bundle outside its scope.
    #[error(
        "permission denied: {who} may use permission `{permission}` only within scope {scope}, and this bundle lacks the label {missing}"
    )]
    OutOfScope {
        who: String,
        permission: Permission,
        scope: String,
        missing: String,
    },
    /// A scoped token's upload asked for another value of a scope label.
    #[error(
        "permission denied: {who} uploads only bundles within scope {scope}, and the upload asks for {label}"
    )]
    LabelConflict {
        who: String,
        scope: String,
        label: String,
    },
    /// No such method on this server (the policy has no rule for it).
    #[error("unknown method {path}")]
    UnknownMethod { path: String },
    /// The token table could not be consulted (a node's copy too old, the store unreadable).
    #[error("cannot check the token now: {reason}")]
    Unavailable { reason: String },
    /// A scope that cannot be used.
    #[error("invalid scope: {reason}")]
    InvalidScope { reason: String },
    /// A role name that is not one of the five.
    #[error("unknown role {role:?}: expected one of {}", role_list(Role::ALL.to_vec()))]
    UnknownRole { role: String },
}

fn role_list(roles: Vec<Role>) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl AuthError {
    /// The stable kind callers act on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::Token(TokenError::Random { .. }) => ErrorKind::Internal,
            AuthError::Token(_) | AuthError::NoCredentials { .. } => ErrorKind::Unauthenticated,
            AuthError::MissingPermission { .. }
            | AuthError::WrongCaller { .. }
            | AuthError::OutOfScope { .. }
            | AuthError::LabelConflict { .. } => ErrorKind::PermissionDenied,
            AuthError::UnknownMethod { .. } => ErrorKind::Grpc(tonic::Code::Unimplemented),
            AuthError::Unavailable { .. } => ErrorKind::MetaUnavailable,
            AuthError::InvalidScope { .. } | AuthError::UnknownRole { .. } => {
                ErrorKind::InvalidArgument
            }
        }
    }

    /// Whether the refusal is about who the caller is (`UNAUTHENTICATED`) or what it may do
    /// (`PERMISSION_DENIED`): the denials the layer counts.
    pub fn is_denial(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied
        )
    }
}

/// The one conversion into a status: the kind's code, the message, the kind header (left out
/// for a plain gRPC kind, as tonic sends `unimplemented` itself).
impl From<&AuthError> for tonic::Status {
    fn from(e: &AuthError) -> Self {
        let kind = e.kind();
        let mut status = tonic::Status::new(kind.code(), e.to_string());
        if !matches!(kind, ErrorKind::Grpc(_)) {
            kind.set_header(&mut status);
        }
        status
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        tonic::Status::from(&e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use bitmountain_proto::error_kind::kind_header;

    #[test]
    fn statuses_carry_code_kind_and_message() {
        let cases = [
            (
                AuthError::Token(TokenError::Malformed),
                tonic::Code::Unauthenticated,
                Some("unauthenticated"),
            ),
            (
                AuthError::MissingPermission {
                    who: "token x".into(),
                    permission: Permission::Write,
                    what: "m".into(),
                },
                tonic::Code::PermissionDenied,
                Some("permission_denied"),
            ),
            (
                AuthError::UnknownMethod {
                    path: "/x/y".into(),
                },
                tonic::Code::Unimplemented,
                None,
            ),
            (
                AuthError::Unavailable { reason: "r".into() },
                tonic::Code::Unavailable,
                Some("meta_unavailable"),
            ),
        ];
        for (err, code, kind) in cases {
            let status = tonic::Status::from(&err);
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(kind_header(&status), kind, "{err}");
            assert_eq!(status.message(), err.to_string());
        }
        let text = AuthError::MissingPermission {
            who: "token x".into(),
            permission: Permission::Delete,
            what: "m".into(),
        }
        .to_string();
        assert!(
            text.contains("`delete`") && text.contains("curator, admin"),
            "{text}"
        );
    }
}
