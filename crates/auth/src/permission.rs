//! Permissions, the roles that bundle them, label scopes, and the principal a request runs as —
//! with the decisions that need a bundle's labels, which the layer cannot see: may this
//! principal read, write or delete this bundle, and which labels must its upload get.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cert::PeerIdentity;
use crate::error::AuthError;
use crate::token::{TokenError, TokenId, TokenRecord};

/// One thing a token may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Read files and indexes, stat, list and export bundles, see the cluster's status.
    Read,
    /// Upload bundles.
    Write,
    /// Delete bundles.
    Delete,
    /// Change disk and node states, repair settings, start scrubs, rebalance.
    Operate,
    /// Tokens, metadata-group membership, the stored value format.
    Admin,
}

impl Permission {
    /// Every permission, weakest first.
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Write,
        Permission::Delete,
        Permission::Operate,
        Permission::Admin,
    ];

    /// The name people type and messages show.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Delete => "delete",
            Permission::Operate => "operate",
            Permission::Admin => "admin",
        }
    }

    /// The roles that have this permission, for messages ("roles with it: writer, admin").
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| r.has(self)).collect()
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fixed set of permissions, given to a token when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// read.
    Reader,
    /// read, write.
    Writer,
    /// read, write, delete.
    Curator,
    /// read, operate.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Reader,
        Role::Writer,
        Role::Curator,
        Role::Operator,
        Role::Admin,
    ];

    /// The name people type and messages show.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Curator => "curator",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether the role includes `permission`.
    pub fn has(self, permission: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Reader => permission == P::Read,
            Role::Writer => matches!(permission, P::Read | P::Write),
            Role::Curator => matches!(permission, P::Read | P::Write | P::Delete),
            Role::Operator => matches!(permission, P::Read | P::Operate),
            Role::Admin => true,
        }
    }

    /// The role's permissions, weakest first.
    pub fn permissions(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.has(*p))
            .collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Role, AuthError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AuthError::UnknownRole { role: s.to_owned() })
    }
}

/// Most labels one scope may name.
pub const MAX_SCOPE_LABELS: usize = 16;
/// Longest label key or value, in bytes (as bundles' labels: `node::limits::MAX_LABEL_BYTES`).
pub const MAX_LABEL_BYTES: usize = 256;

/// Labels that limit a token's read, write and delete to the bundles carrying all of them.
/// Empty: every bundle. There is no wildcard: a scope is a list of exact `key=value` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(BTreeMap<String, String>);

impl Scope {
    /// A scope from `key=value` texts (`token create --label`), each key at most once.
    pub fn parse<I, S>(labels: I) -> Result<Scope, AuthError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut map = BTreeMap::new();
        for text in labels {
            let text = text.as_ref();
            let (k, v) = text
                .split_once('=')
                .ok_or_else(|| AuthError::InvalidScope {
                    reason: format!("label {text:?}: expected KEY=VALUE"),
                })?;
            if let Some(old) = map.insert(k.to_owned(), v.to_owned()) {
                return Err(AuthError::InvalidScope {
                    reason: format!(
                        "label {k:?} given twice ({old:?} and {v:?}); a bundle carries one value per key"
                    ),
                });
            }
        }
        Scope::from_labels(map)
    }

    /// A scope of these labels, checked against the limits bundles' labels have.
    pub fn from_labels(labels: BTreeMap<String, String>) -> Result<Scope, AuthError> {
        if labels.len() > MAX_SCOPE_LABELS {
            return Err(AuthError::InvalidScope {
                reason: format!(
                    "{} labels; a scope names at most {MAX_SCOPE_LABELS}",
                    labels.len()
                ),
            });
        }
        for (k, v) in &labels {
            if k.is_empty() || k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES {
                return Err(AuthError::InvalidScope {
                    reason: format!(
                        "label {k:?}={v:?}: keys must be 1 to {MAX_LABEL_BYTES} bytes, values at most {MAX_LABEL_BYTES}"
                    ),
                });
            }
            if k.contains(['\0', '=']) || v.contains('\0') {
                return Err(AuthError::InvalidScope {
                    reason: format!("label {k:?}: NUL, and `=` in keys, are not allowed"),
                });
            }
        }
        Ok(Scope(labels))
    }

    /// The labels (empty: unscoped).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether the scope limits nothing.
    pub fn is_unscoped(&self) -> bool {
        self.0.is_empty()
    }

    /// The first scope label a bundle with `labels` lacks; `None` if the scope admits it.
    pub fn missing_from<'a>(
        &'a self,
        labels: &BTreeMap<String, String>,
    ) -> Option<(&'a str, &'a str)> {
        self.0
            .iter()
            .find(|(k, v)| labels.get(*k) != Some(*v))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether a bundle with `labels` is inside the scope.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.missing_from(labels).is_none()
    }

    /// Refuses scopes that would limit nothing in practice: an admin can create unscoped
    /// tokens, so a scoped admin token only looks limited.
    pub fn check_for(&self, role: Role) -> Result<(), AuthError> {
        if role == Role::Admin && !self.is_unscoped() {
            return Err(AuthError::InvalidScope {
                reason: "an admin token cannot be scoped: it can create unscoped tokens".into(),
            });
        }
        Ok(())
    }
}

/// `key=value,key=value`, or `every bundle` when unscoped.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("every bundle");
        }
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// What a request does to a bundle: the three permissions a scope limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleAction {
    Read,
    Write,
    Delete,
}

impl BundleAction {
    /// The permission the action needs.
    pub fn permission(self) -> Permission {
        match self {
            BundleAction::Read => Permission::Read,
            BundleAction::Write => Permission::Write,
            BundleAction::Delete => Permission::Delete,
        }
    }
}

/// Who a request runs as, put into its extensions by the layer for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody: an open method (health), where no identity is checked.
    Anonymous,
    /// A metadata member or storage node, by its certificate.
    Peer(PeerIdentity),
    /// A client, by its token.
    Token(TokenPrincipal),
}

/// The part of a token's record a request needs: who it is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrincipal {
    pub id: TokenId,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
}

impl From<&TokenRecord> for TokenPrincipal {
    fn from(r: &TokenRecord) -> Self {
        TokenPrincipal {
            id: r.id,
            name: r.name.clone(),
            role: r.role,
            scope: r.scope.clone(),
        }
    }
}

impl fmt::Display for TokenPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {} ({:?}, role {}", self.id, self.name, self.role)?;
        if !self.scope.is_unscoped() {
            write!(f, ", scope {}", self.scope)?;
        }
        f.write_str(")")
    }
}

/// For messages: `token 0123456789abcdef ("ci", role writer, scope book=b1)`,
/// `node n1's certificate`, `an anonymous caller`.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("an anonymous caller"),
            Principal::Peer(p) => write!(f, "{p}"),
            Principal::Token(t) => write!(f, "{t}"),
        }
    }
}

impl Principal {
    /// The token's id, if the principal is a token (for logs and audit).
    pub fn token_id(&self) -> Option<TokenId> {
        match self {
            Principal::Token(t) => Some(t.id),
            _ => None,
        }
    }

    /// May this principal do `action` to a bundle carrying `labels`? Members and nodes may
    /// (the method policy already limited what they reach); a token needs the permission and,
    /// if scoped, every scope label on the bundle.
    pub fn may_access(
        &self,
        action: BundleAction,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), AuthError> {
        let t = match self {
            Principal::Peer(_) => return Ok(()),
            Principal::Anonymous => return Err(AuthError::Token(TokenError::Missing)),
            Principal::Token(t) => t,
        };
        let permission = action.permission();
        if !t.role.has(permission) {
            return Err(AuthError::MissingPermission {
                who: self.to_string(),
                permission,
                what: format!("{} bundles", verb(action)),
            });
        }
        match t.scope.missing_from(labels) {
            None => Ok(()),
            Some((key, value)) => Err(AuthError::OutOfScope {
                who: self.to_string(),
                permission,
                scope: t.scope.to_string(),
                missing: format!("{key}={value}"),
            }),
        }
    }

    /// Whether this principal may read a bundle with `labels`: the filter for listings and
    /// the counts in a status, so a scoped token never sees other bundles.
    pub fn sees(&self, labels: &BTreeMap<String, String>) -> bool {
        self.may_access(BundleAction::Read, labels).is_ok()
    }

    /// The labels an upload asking for `requested` must get: a scoped token's uploads carry
    /// its scope's labels (added if absent); a different value for a scope key is refused.
    pub fn upload_labels(
        &self,
        mut requested: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, AuthError> {
        let Principal::Token(t) = self else {
            self.may_access(BundleAction::Write, &requested)?;
            return Ok(requested);
        };
        if !t.role.has(Permission::Write) {
            return Err(AuthError::MissingPermission {
                who: self.to_string(),
                permission: Permission::Write,
                what: "uploading bundles".into(),
            });
        }
        for (key, value) in t.scope.labels() {
            match requested.get(key) {
                Some(asked) if asked != value => {
                    return Err(AuthError::LabelConflict {
                        who: self.to_string(),
                        scope: t.scope.to_string(),
                        label: format!("{key}={asked}"),
                    })
                }
                Some(_) => {}
                None => {
                    requested.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(requested)
    }
}

fn verb(action: BundleAction) -> &'static str {
    match action {
        BundleAction::Read => "read",
        BundleAction::Write => "write",
        BundleAction::Delete => "delete",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::cert::PeerRole;
    use crate::token::Token;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn token(role: Role, scope: &[&str]) -> Principal {
        Principal::Token(TokenPrincipal {
            id: Token::generate().unwrap().id(),
            name: "t".into(),
            role,
            scope: Scope::parse(scope).unwrap(),
        })
    }

    #[test]
    fn roles_are_the_documented_permission_sets() {
        use Permission::*;
        let expect = [
            (Role::Reader, vec![Read]),
            (Role::Writer, vec![Read, Write]),
            (Role::Curator, vec![Read, Write, Delete]),
            (Role::Operator, vec![Read, Operate]),
            (Role::Admin, vec![Read, Write, Delete, Operate, Admin]),
        ];
        for (role, perms) in expect {
            assert_eq!(role.permissions(), perms, "{role}");
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert_eq!(
            Write.roles(),
            vec![Role::Writer, Role::Curator, Role::Admin]
        );
        let err = "root".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("root") && err.contains("curator"), "{err}");
    }

    #[test]
    fn scopes_parse_strictly() {
        let s = Scope::parse(["book=b1", "team=x=y"]).unwrap();
        assert_eq!(s.to_string(), "book=b1,team=x=y");
        assert_eq!(Scope::default().to_string(), "every bundle");
        for bad in [
            vec!["book"],
            vec!["=v"],
            vec!["book=a", "book=b"],
            vec!["a\0=b"],
        ] {
            assert!(Scope::parse(&bad).is_err(), "{bad:?}");
        }
        let long = format!("k={}", "v".repeat(MAX_LABEL_BYTES + 1));
        assert!(Scope::parse([long]).is_err());
        let many: Vec<String> = (0..=MAX_SCOPE_LABELS).map(|i| format!("k{i}=v")).collect();
        assert!(Scope::parse(&many).is_err());
        assert!(Scope::parse(["a=b"])
            .unwrap()
            .check_for(Role::Admin)
            .is_err());
        assert!(Scope::default().check_for(Role::Admin).is_ok());
        assert!(Scope::parse(["a=b"])
            .unwrap()
            .check_for(Role::Operator)
            .is_ok());
    }

    #[test]
    fn scoped_tokens_reach_only_bundles_with_every_scope_label() {
        let p = token(Role::Curator, &["book=b1", "team=t"]);
        let inside = labels(&[("book", "b1"), ("team", "t"), ("extra", "1")]);
        let outside = labels(&[("book", "b1")]);
        let other = labels(&[("book", "b2"), ("team", "t")]);
        for action in [
            BundleAction::Read,
            BundleAction::Write,
            BundleAction::Delete,
        ] {
            assert!(p.may_access(action, &inside).is_ok());
            let err = p.may_access(action, &outside).unwrap_err();
            assert!(matches!(err, AuthError::OutOfScope { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("team=t"), "{text}");
            assert!(text.contains(action.permission().as_str()), "{text}");
            assert!(p.may_access(action, &other).is_err());
        }
        assert!(p.sees(&inside) && !p.sees(&other) && !p.sees(&BTreeMap::new()));
        // Unscoped: every bundle.
        let u = token(Role::Reader, &[]);
        assert!(u.sees(&BTreeMap::new()) && u.sees(&other));
    }

    #[test]
    fn the_role_limits_what_a_token_may_do_to_a_bundle() {
        let none = BTreeMap::new();
        let reader = token(Role::Reader, &[]);
        assert!(reader.may_access(BundleAction::Read, &none).is_ok());
        let err = reader.may_access(BundleAction::Write, &none).unwrap_err();
        assert!(matches!(
            err,
            AuthError::MissingPermission {
                permission: Permission::Write,
                ..
            }
        ));
        assert!(err.to_string().contains("`write`"), "{err}");
        let writer = token(Role::Writer, &[]);
        assert!(writer.may_access(BundleAction::Delete, &none).is_err());
        let operator = token(Role::Operator, &[]);
        assert!(operator.may_access(BundleAction::Write, &none).is_err());
        assert!(operator.may_access(BundleAction::Read, &none).is_ok());
        // Certificates act for the cluster; nobody at all is refused.
        let node = Principal::Peer(PeerIdentity {
            role: PeerRole::Node,
            name: "n1".into(),
        });
        assert!(node.may_access(BundleAction::Delete, &none).is_ok());
        let err = Principal::Anonymous
            .may_access(BundleAction::Read, &none)
            .unwrap_err();
        assert!(matches!(err, AuthError::Token(TokenError::Missing)));
    }

    #[test]
    fn scoped_uploads_get_the_scope_labels_and_refuse_conflicts() {
        let p = token(Role::Writer, &["book=b1"]);
        let got = p.upload_labels(labels(&[("page", "1")])).unwrap();
        assert_eq!(got, labels(&[("book", "b1"), ("page", "1")]));
        let same = p.upload_labels(labels(&[("book", "b1")])).unwrap();
        assert_eq!(same, labels(&[("book", "b1")]));
        let err = p.upload_labels(labels(&[("book", "b2")])).unwrap_err();
        assert!(matches!(err, AuthError::LabelConflict { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("book=b2") && text.contains("book=b1"),
            "{text}"
        );
        // Unscoped writers keep their labels; readers cannot upload at all.
        let u = token(Role::Writer, &[]);
        assert_eq!(
            u.upload_labels(labels(&[("a", "b")])).unwrap(),
            labels(&[("a", "b")])
        );
        let r = token(Role::Reader, &["book=b1"]);
        let err = r.upload_labels(BTreeMap::new()).unwrap_err();
        assert!(matches!(err, AuthError::MissingPermission { .. }), "{err}");
    }
}
