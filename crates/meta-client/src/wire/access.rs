//! Access tokens on the wire: the server and the client convert with the same functions.

use bitmountain_auth::{Role, Scope, TokenHash, TokenId, TokenRecord};
use bitmountain_proto::v1 as pb;

use super::{labels_from_proto, labels_to_proto};
use crate::error::{Field, MetaError, Result};

/// A token record as `TokenInfo` (the secret's hash included: nodes check tokens with it).
pub fn token_to_proto(r: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: r.id.to_string(),
        name: r.name.clone(),
        role: r.role.as_str().to_string(),
        scope: labels_to_proto(r.scope.labels()),
        created_unix_ms: r.created_unix_ms,
        expires_unix_ms: r.expires_unix_ms,
        revoked_unix_ms: r.revoked_unix_ms,
        secret_sha256: r.hash.to_bytes().to_vec(),
    }
}

/// A token id as a user or a message gives it.
pub fn token_id_from_str(id: &str) -> Result<TokenId> {
    id.parse().map_err(|_| MetaError::InvalidArgument {
        field: Field::Token,
        reason: format!("{id:?} is not a token id (16 lowercase hex digits)"),
    })
}

/// A role by name.
pub fn role_from_str(role: &str) -> Result<Role> {
    role.parse().map_err(|e| MetaError::InvalidArgument {
        field: Field::Role,
        reason: format!("{e}"),
    })
}

/// A scope from wire labels.
pub fn scope_from_proto(labels: &[pb::Label]) -> Result<Scope> {
    Scope::from_labels(labels_from_proto(labels)?).map_err(|e| MetaError::InvalidArgument {
        field: Field::Label,
        reason: format!("{e}"),
    })
}

/// The record a `TokenInfo` describes.
pub fn token_from_proto(t: &pb::TokenInfo) -> Result<TokenRecord> {
    let hash: [u8; 32] =
        t.secret_sha256
            .as_slice()
            .try_into()
            .map_err(|_| MetaError::InvalidArgument {
                field: Field::Token,
                reason: format!(
                    "token {}: the secret's hash has {} bytes, not 32",
                    t.id,
                    t.secret_sha256.len()
                ),
            })?;
    Ok(TokenRecord {
        id: token_id_from_str(&t.id)?,
        name: t.name.clone(),
        role: role_from_str(&t.role)?,
        scope: scope_from_proto(&t.scope)?,
        created_unix_ms: t.created_unix_ms,
        expires_unix_ms: t.expires_unix_ms,
        revoked_unix_ms: t.revoked_unix_ms,
        hash: TokenHash::from_bytes(hash),
    })
}
