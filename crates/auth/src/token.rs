//! Bearer tokens: `bmt_<16 hex id>_<64 hex secret>`, their stored records and their check.
//!
//! The id (8 random bytes) is public: the lookup key, and what logs and `token list` show. The
//! secret (32 random bytes from the OS) is shown once, when the token is created; the metadata
//! group keeps only `SHA-256("bitmountain-token-v1\0" || id || secret)` (raw bytes, not hex).
//! A plain hash is enough for 256 random bits (a slow password hash is for guessable secrets);
//! the tag and the id separate it from any other use of SHA-256.
//!
//! Parsing is strict — exact length, the prefix, lowercase hex — so garbage is refused before
//! any lookup. The check ([`verify`]) compares hashes in constant time, and says that a token
//! expired or was revoked only to someone who showed its secret: without it, an id that exists
//! and one that does not look the same ("unknown token").

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use rand::TryRngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::permission::{Role, Scope};

/// What every token starts with, so secret scanners recognise a leaked one.
pub const TOKEN_PREFIX: &str = "bmt_";
/// Bytes of a token id.
pub const ID_BYTES: usize = 8;
/// Bytes of a token secret.
pub const SECRET_BYTES: usize = 32;
/// Length of a token's text: the prefix, the id, `_`, the secret (85).
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 2 * ID_BYTES + 1 + 2 * SECRET_BYTES;
/// The authorization scheme, followed by one space (compared case-insensitively, RFC 7235).
pub const BEARER: &str = "Bearer ";
/// Domain separation for the stored hash; a new scheme gets a new tag.
const HASH_TAG: &[u8] = b"bitmountain-token-v1\0";

/// Why a token was not accepted. The messages are what a client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `authorization` header.
    #[error("missing token: pass one with --token, BITMOUNTAIN_TOKEN or --token-file")]
    Missing,
    /// The header or the token is not in the one accepted format.
    #[error(
        "malformed token: expected one header `authorization: Bearer bmt_<16 hex digits>_<64 hex digits>`"
    )]
    Malformed,
    /// No token with this id, or a wrong secret (indistinguishable on purpose).
    #[error("unknown token: no token has this id and secret (revoked and recreated? check `token list`)")]
    Unknown,
    /// The token's expiry has passed.
    #[error("token {id} expired at {}; ask an admin for a new one", rfc3339(.at_unix_ms))]
    Expired { id: TokenId, at_unix_ms: u64 },
    /// The token was revoked.
    #[error("token {id} was revoked at {}; ask an admin for a new one", rfc3339(.at_unix_ms))]
    Revoked { id: TokenId, at_unix_ms: u64 },
    /// The operating system's random source failed while creating a token.
    #[error("cannot create a token: the system's random source failed: {reason}")]
    Random { reason: String },
}

fn rfc3339(unix_ms: &u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(*unix_ms)).to_string()
}

/// A token's public id: 8 bytes, written as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId([u8; ID_BYTES]);

impl TokenId {
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        TokenId(bytes)
    }

    /// The id's bytes.
    pub const fn to_bytes(self) -> [u8; ID_BYTES] {
        self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// Parses the 16 lowercase hex digits of an id (as `token revoke ID` takes it).
impl FromStr for TokenId {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        decode_lower_hex(s.as_bytes())
            .map(TokenId)
            .ok_or(TokenError::Malformed)
    }
}

impl Serialize for TokenId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom("a token id is 16 lowercase hex digits"))
    }
}

/// A token's secret. Its `Debug` never prints it, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
struct TokenSecret([u8; SECRET_BYTES]);

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A whole token as a client holds it: id and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: TokenId,
    secret: TokenSecret,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

impl Token {
    /// A new token with an id and a secret from the operating system's random source.
    pub fn generate() -> Result<Token, TokenError> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        let mut rng = rand::rngs::OsRng;
        rng.try_fill_bytes(&mut id)
            .and_then(|()| rng.try_fill_bytes(&mut secret))
            .map_err(|e| TokenError::Random {
                reason: e.to_string(),
            })?;
        Ok(Token {
            id: TokenId(id),
            secret: TokenSecret(secret),
        })
    }

    /// Parses a token's text: exactly `bmt_`, 16 and 64 lowercase hex digits around `_`.
    /// Anything else is [`TokenError::Malformed`].
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let b = text.as_bytes();
        // Length first: a 10,000-byte header costs one comparison.
        if b.len() != TOKEN_LEN || !b.starts_with(TOKEN_PREFIX.as_bytes()) {
            return Err(TokenError::Malformed);
        }
        let id_end = TOKEN_PREFIX.len() + 2 * ID_BYTES;
        if b[id_end] != b'_' {
            return Err(TokenError::Malformed);
        }
        let id = decode_lower_hex(&b[TOKEN_PREFIX.len()..id_end]);
        let secret = decode_lower_hex(&b[id_end + 1..]);
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(Token {
                id: TokenId(id),
                secret: TokenSecret(secret),
            }),
            _ => Err(TokenError::Malformed),
        }
    }

    /// The token in an `authorization` header's value: `Bearer <token>`. `None` (no header)
    /// is [`TokenError::Missing`]; any other scheme, spacing or token is malformed.
    pub fn from_authorization(value: Option<&[u8]>) -> Result<Token, TokenError> {
        let value = value.ok_or(TokenError::Missing)?;
        if value.len() != BEARER.len() + TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (scheme, token) = value.split_at(BEARER.len());
        if !scheme.eq_ignore_ascii_case(BEARER.as_bytes()) {
            return Err(TokenError::Malformed);
        }
        std::str::from_utf8(token)
            .map_err(|_| TokenError::Malformed)
            .and_then(Token::parse)
    }

    /// The token's public id.
    pub fn id(&self) -> TokenId {
        self.id
    }

    /// The hash the metadata group stores for this token.
    pub fn hash(&self) -> TokenHash {
        let mut h = Sha256::new();
        h.update(HASH_TAG);
        h.update(self.id.0);
        h.update(self.secret.0);
        TokenHash(h.finalize().into())
    }

    /// The token's full text, secret included: for showing once to whoever created it, and
    /// for clients to send. Never log it.
    pub fn expose_secret(&self) -> String {
        format!(
            "{TOKEN_PREFIX}{}_{}",
            hex::encode(self.id.0),
            hex::encode(self.secret.0)
        )
    }

    /// The `authorization` header value a client sends: `Bearer <token>`.
    pub fn authorization_value(&self) -> String {
        format!("{BEARER}{}", self.expose_secret())
    }
}

/// The lowercase hex `text` decoded into exactly `N` bytes; `None` for any other length or
/// character (uppercase included: one spelling per token).
fn decode_lower_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The stored SHA-256 of a token (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash with these bytes (as stored).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenHash(bytes)
    }

    /// The hash's bytes.
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Whether the two hashes are equal, in time independent of where they differ.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        bool::from(self.0[..].ct_eq(&other.0[..]))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", hex::encode(self.0))
    }
}

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        decode_lower_hex(text.as_bytes())
            .map(TokenHash)
            .ok_or_else(|| serde::de::Error::custom("a token hash is 64 lowercase hex digits"))
    }
}

/// What the metadata group stores about a token. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: TokenId,
    /// A name for people (`token create --name`); not unique, not used for decisions.
    pub name: String,
    pub role: Role,
    /// Labels limiting read, write and delete; empty: every bundle.
    pub scope: Scope,
    pub created_unix_ms: u64,
    /// 0: never expires.
    pub expires_unix_ms: u64,
    /// 0: not revoked.
    pub revoked_unix_ms: u64,
    pub hash: TokenHash,
}

impl TokenRecord {
    /// The record of a newly created `token`.
    pub fn new(
        token: &Token,
        name: impl Into<String>,
        role: Role,
        scope: Scope,
        created_unix_ms: u64,
        expires_unix_ms: u64,
    ) -> TokenRecord {
        TokenRecord {
            id: token.id(),
            name: name.into(),
            role,
            scope,
            created_unix_ms,
            expires_unix_ms,
            revoked_unix_ms: 0,
            hash: token.hash(),
        }
    }

    /// Whether the token may be used at `now_unix_ms` (neither revoked nor expired).
    pub fn is_live(&self, now_unix_ms: u64) -> bool {
        self.revoked_unix_ms == 0
            && (self.expires_unix_ms == 0 || now_unix_ms < self.expires_unix_ms)
    }
}

/// A hash no token has, compared against when the id is unknown so that a miss costs what a
/// wrong secret costs.
const NO_HASH: TokenHash = TokenHash([0; 32]);

/// Checks `token` against `record` (what the lookup by its id found), in this order: a record
/// must exist, the hash must match (constant time), and only then may the token be revoked or
/// expired. Returns the record the token proved.
pub fn verify<'r>(
    token: &Token,
    record: Option<&'r TokenRecord>,
    now_unix_ms: u64,
) -> Result<&'r TokenRecord, TokenError> {
    let presented = token.hash();
    let Some(record) = record.filter(|r| r.id == token.id()) else {
        let _ = presented.ct_eq(&NO_HASH);
        return Err(TokenError::Unknown);
    };
    if !presented.ct_eq(&record.hash) {
        return Err(TokenError::Unknown);
    }
    if record.revoked_unix_ms != 0 {
        return Err(TokenError::Revoked {
            id: record.id,
            at_unix_ms: record.revoked_unix_ms,
        });
    }
    if record.expires_unix_ms != 0 && now_unix_ms >= record.expires_unix_ms {
        return Err(TokenError::Expired {
            id: record.id,
            at_unix_ms: record.expires_unix_ms,
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn record(token: &Token) -> TokenRecord {
        TokenRecord::new(token, "ci", Role::Writer, Scope::default(), 1_000, 0)
    }

    #[test]
    fn generated_tokens_round_trip_through_their_text() {
        let t = Token::generate().unwrap();
        let text = t.expose_secret();
        assert_eq!(text.len(), TOKEN_LEN);
        assert_eq!(TOKEN_LEN, 85);
        assert!(text.starts_with("bmt_"));
        assert_eq!(Token::parse(&text).unwrap(), t);
        let header = t.authorization_value();
        assert_eq!(
            Token::from_authorization(Some(header.as_bytes())).unwrap(),
            t
        );
        assert_eq!(t.id().to_string(), text[4..20]);
        assert_eq!(t.id().to_string().parse::<TokenId>().unwrap(), t.id());
        assert_ne!(Token::generate().unwrap(), t, "two tokens from the OS RNG");
    }

    #[test]
    fn parsing_is_strict() {
        let good = Token::generate().unwrap().expose_secret();
        let mut bad = vec![
            String::new(),
            "bmt_".into(),
            good[..TOKEN_LEN - 1].into(),
            format!("{good}0"),
            format!(" {}", &good[1..]),
            good.replacen("bmt_", "bmx_", 1),
            good.to_uppercase(),
            format!("{}-{}", &good[..20], &good[21..]),
            format!("{}g{}", &good[..30], &good[31..]),
            "x".repeat(10_000),
        ];
        // Uppercase in the hex alone (the prefix kept).
        let upper = format!("bmt_{}", good[4..].to_uppercase());
        if upper != good {
            bad.push(upper);
        }
        // A multi-byte character of the right byte length.
        bad.push(format!("{}é{}", &good[..40], &good[42..]));
        for text in bad {
            assert_eq!(Token::parse(&text), Err(TokenError::Malformed), "{text:?}");
        }
    }

    #[test]
    fn the_header_needs_the_bearer_scheme() {
        let t = Token::generate().unwrap();
        let s = t.expose_secret();
        assert_eq!(Token::from_authorization(None), Err(TokenError::Missing));
        for header in [
            s.clone(),
            format!("Basic {s}"),
            format!("Bearer  {s}"),
            format!("Bearer{s}"),
            format!("Bearer {s} "),
            format!("Bearer_{s}"),
            format!("Basic  {s}"),
            "Bearer ".into(),
            format!("Bearer {}", "a".repeat(10_000)),
        ] {
            assert_eq!(
                Token::from_authorization(Some(header.as_bytes())),
                Err(TokenError::Malformed),
                "{header:?}"
            );
        }
        // Not UTF-8.
        let mut raw = format!("Bearer {s}").into_bytes();
        raw[10] = 0xff;
        assert_eq!(
            Token::from_authorization(Some(&raw)),
            Err(TokenError::Malformed)
        );
        // The scheme's case does not matter (RFC 7235).
        let lower = format!("bearer {s}");
        assert_eq!(
            Token::from_authorization(Some(lower.as_bytes())).unwrap(),
            t
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::generate().unwrap();
        let text = t.expose_secret();
        let secret = &text[21..];
        let debug = format!("{t:?} {:?}", t.secret);
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains(&t.id().to_string()), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        let t = Token::parse(&format!("bmt_{}_{}", "01".repeat(8), "ab".repeat(32))).unwrap();
        let mut input = b"bitmountain-token-v1\0".to_vec();
        input.extend([1u8; 8]);
        input.extend([0xab_u8; 32]);
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(t.hash().to_bytes(), expected);
    }

    #[test]
    fn verification_checks_the_secret_before_saying_anything_else() {
        let t = Token::generate().unwrap();
        let mut rec = record(&t);
        assert_eq!(verify(&t, Some(&rec), 5_000).unwrap(), &rec);
        assert_eq!(verify(&t, None, 5_000), Err(TokenError::Unknown));
        // Same id, wrong secret: unknown, even when the record is revoked and expired.
        let wrong = Token::parse(&format!("bmt_{}_{}", t.id(), "0".repeat(64))).unwrap();
        rec.revoked_unix_ms = 2_000;
        rec.expires_unix_ms = 3_000;
        assert_eq!(verify(&wrong, Some(&rec), 5_000), Err(TokenError::Unknown));
        // A record of another id (a lookup that returned the wrong one): unknown.
        let other = Token::generate().unwrap();
        assert_eq!(verify(&other, Some(&rec), 5_000), Err(TokenError::Unknown));
        // With the secret: revoked wins over expired.
        let err = verify(&t, Some(&rec), 5_000).unwrap_err();
        assert!(matches!(
            err,
            TokenError::Revoked {
                at_unix_ms: 2_000,
                ..
            }
        ));
        assert!(err.to_string().contains("revoked"), "{err}");
        rec.revoked_unix_ms = 0;
        let err = verify(&t, Some(&rec), 3_000).unwrap_err();
        assert!(matches!(
            err,
            TokenError::Expired {
                at_unix_ms: 3_000,
                ..
            }
        ));
        assert!(
            err.to_string().contains("expired at 1970-01-01T00:00:03Z"),
            "{err}"
        );
        assert!(verify(&t, Some(&rec), 2_999).is_ok());
        assert!(rec.is_live(2_999) && !rec.is_live(3_000));
    }

    #[test]
    fn messages_name_the_case_and_never_the_secret() {
        let t = Token::generate().unwrap();
        for (err, word) in [
            (TokenError::Missing, "missing"),
            (TokenError::Malformed, "malformed"),
            (TokenError::Unknown, "unknown"),
            (
                TokenError::Expired {
                    id: t.id(),
                    at_unix_ms: 1,
                },
                "expired",
            ),
            (
                TokenError::Revoked {
                    id: t.id(),
                    at_unix_ms: 1,
                },
                "revoked",
            ),
        ] {
            let text = err.to_string();
            assert!(text.contains(word), "{text}");
            assert!(!text.contains(&t.expose_secret()[21..]), "{text}");
        }
    }

    #[test]
    fn records_serialize_without_secrets() {
        let t = Token::generate().unwrap();
        let rec = record(&t);
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains(&t.expose_secret()[21..]), "{json}");
        assert!(json.contains(&format!("\"{}\"", t.id())), "{json}");
        let back: TokenRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        assert!(serde_json::from_str::<TokenId>("\"ABCDEF0123456789\"").is_err());
    }
}
