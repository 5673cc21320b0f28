//! MIME pieces of the bundle format (RFC 2045/2046/2231): the boundary, the message header, part
//! headers and their parser. Every header this module writes, it can also parse; the parser is
//! strict about what it needs and tolerant of headers it does not know.

use rand::Rng;

use crate::error::{BundleError, Result};
use crate::limits::{MAX_CONTENT_TYPE_BYTES, MAX_PART_HEADER_BYTES};

/// Version of the bundle format, written in the top-level `X-Bitmountain-Bundle` header.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;
/// Content type of the index part.
pub const INDEX_CONTENT_TYPE: &str = "application/vnd.bitmountain.index";
/// Length of the random part of a boundary.
const BOUNDARY_RANDOM_CHARS: usize = 40;
const BOUNDARY_PREFIX: &str = "bitmountain-";
/// Default content type for a file whose type nobody declared.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A fresh random boundary: 52 characters from the RFC 2046 safe set. With 40 random
/// alphanumerics a collision with file content is astronomically unlikely, and our own reader
/// never scans for boundaries anyway (it follows `Content-Length` and the index).
pub fn random_boundary() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut b = String::with_capacity(BOUNDARY_PREFIX.len() + BOUNDARY_RANDOM_CHARS);
    b.push_str(BOUNDARY_PREFIX);
    for _ in 0..BOUNDARY_RANDOM_CHARS {
        b.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    b
}

/// Checks a boundary chosen by a caller: 32 to 70 characters of the RFC 2046 `bchars` set
/// without the space (which would need quoting care at the end).
pub fn validate_boundary(boundary: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=?".contains(c);
    if !(32..=70).contains(&boundary.len()) || !boundary.chars().all(ok_char) {
        return Err(BundleError::Misuse {
            reason: "a boundary must be 32 to 70 characters of [A-Za-z0-9'()+_,-./:=?]",
        });
    }
    Ok(())
}

/// The top-level message header, ending with the blank line.
pub fn message_header(boundary: &str) -> String {
    format!(
        "MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\
         X-Bitmountain-Bundle: {BUNDLE_FORMAT_VERSION}\r\n\
         \r\n"
    )
}

/// Checks a content type: `type/subtype` with optional parameters, printable ASCII, bounded.
pub fn validate_content_type(path: &str, content_type: &str) -> Result<()> {
    let printable = content_type.bytes().all(|b| (0x20..0x7f).contains(&b));
    let has_slash = content_type.split(';').next().is_some_and(|t| {
        t.trim()
            .split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
    });
    if !printable || !has_slash || content_type.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(BundleError::InvalidContentType {
            path: path.to_owned(),
            content_type: content_type.to_owned(),
            limit_bytes: MAX_CONTENT_TYPE_BYTES,
        });
    }
    Ok(())
}

/// The `Content-Disposition` value for a path: a quoted `filename` when the path is plain
/// ASCII, RFC 2231 `filename*=UTF-8''…` percent-encoding otherwise.
pub fn content_disposition(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != b'%');
    if plain {
        format!("attachment; filename=\"{path}\"")
    } else {
        let mut encoded = String::with_capacity(path.len() * 3);
        for b in path.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                encoded.push(char::from(b));
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("attachment; filename*=UTF-8''{encoded}")
    }
}

/// A file part's header block, ending with the blank line.
pub fn file_part_header(
    path: &str,
    content_type: &str,
    length: u64,
    sha256: Option<&[u8; 32]>,
) -> String {
    let mut h = format!(
        "Content-Type: {content_type}\r\n\
         Content-Disposition: {}\r\n\
         Content-Transfer-Encoding: binary\r\n\
         Content-Length: {length}\r\n",
        content_disposition(path)
    );
    if let Some(sha) = sha256 {
        h.push_str(&format!("X-Bitmountain-Sha256: {}\r\n", hex::encode(sha)));
    }
    h.push_str("\r\n");
    h
}

/// The index part's header block, ending with the blank line.
pub fn index_part_header(length: u64) -> String {
    format!(
        "Content-Type: {INDEX_CONTENT_TYPE}\r\n\
         Content-Description: Bit Mountain bundle index, format version {}\r\n\
         Content-Transfer-Encoding: binary\r\n\
         Content-Length: {length}\r\n\
         \r\n",
        crate::index::INDEX_VERSION
    )
}

/// What the reader needs from a part's header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHeaders {
    pub content_type: Option<String>,
    /// The path from `Content-Disposition`, decoded.
    pub filename: Option<String>,
    pub content_length: Option<u64>,
    pub sha256: Option<[u8; 32]>,
}

/// Parses a header block (the bytes up to, not including, the blank line). `part` names the part
/// in errors.
pub fn parse_part_headers(block: &[u8], part: &str) -> Result<PartHeaders> {
    let bad = |reason: String| BundleError::BadPartHeader {
        part: part.to_owned(),
        reason,
    };
    if block.len() > MAX_PART_HEADER_BYTES {
        return Err(bad(format!(
            "header block is {} bytes; the limit is {MAX_PART_HEADER_BYTES}",
            block.len()
        )));
    }
    let text =
        std::str::from_utf8(block).map_err(|_| bad("header block is not ASCII/UTF-8".into()))?;
    let mut headers = PartHeaders {
        content_type: None,
        filename: None,
        content_length: None,
        sha256: None,
    };
    for line in unfold(text) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("header line without a colon: {line:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => headers.content_type = Some(value.to_owned()),
            "content-length" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("Content-Length {value:?} is not a number")))?;
                headers.content_length = Some(n);
            }
            "content-disposition" => headers.filename = disposition_filename(value).map_err(bad)?,
            "x-bitmountain-sha256" => {
                let mut sha = [0u8; 32];
                hex::decode_to_slice(value, &mut sha).map_err(|_| {
                    bad(format!(
                        "X-Bitmountain-Sha256 {value:?} is not 64 hex digits"
                    ))
                })?;
                headers.sha256 = Some(sha);
            }
            "content-transfer-encoding" if !value.eq_ignore_ascii_case("binary") => {
                return Err(bad(format!(
                    "Content-Transfer-Encoding {value:?}: bundles only use binary"
                )));
            }
            _ => {}
        }
    }
    if let Some(ct) = &headers.content_type {
        if ct.len() > MAX_CONTENT_TYPE_BYTES {
            return Err(bad(format!("content type of {} bytes", ct.len())));
        }
    }
    Ok(headers)
}

/// Joins folded header lines (RFC 5322 §2.2.3) and splits on CRLF.
fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split("\r\n") {
        if raw.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push_str(raw);
                continue;
            }
        }
        if !raw.is_empty() {
            lines.push(raw.to_owned());
        }
    }
    lines
}

/// Extracts the filename from a `Content-Disposition` value, preferring RFC 2231 `filename*`.
fn disposition_filename(value: &str) -> std::result::Result<Option<String>, String> {
    let mut plain = None;
    for param in split_params(value).into_iter().skip(1) {
        let Some((name, val)) = param.split_once('=') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "filename*" => return decode_rfc2231(val.trim()).map(Some),
            "filename" => plain = Some(unquote(val.trim())?),
            _ => {}
        }
    }
    Ok(plain)
}

/// Splits a header value on `;` outside quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' if in_quotes => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                current.push(c);
                in_quotes = !in_quotes;
            }
            ';' if !in_quotes => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

fn unquote(value: &str) -> std::result::Result<String, String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Ok(value.to_owned());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| format!("unterminated quoted string {value:?}"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Decodes `charset'language'percent-encoded` (RFC 2231 §4); only UTF-8 and US-ASCII charsets.
fn decode_rfc2231(value: &str) -> std::result::Result<String, String> {
    let mut parts = value.splitn(3, '\'');
    let (Some(charset), Some(_language), Some(encoded)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("filename* {value:?} is not charset'language'value"));
    };
    if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("us-ascii") {
        return Err(format!(
            "filename* charset {charset:?} is not supported; bundles use UTF-8"
        ));
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or("truncated %-escape in filename*")?;
            let text = std::str::from_utf8(hex).map_err(|_| "bad %-escape in filename*")?;
            out.push(
                u8::from_str_radix(text, 16)
                    .map_err(|_| format!("bad %-escape %{text} in filename*"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "filename* does not decode to UTF-8".to_owned())
}

/// Extracts the boundary from the top-level header block and checks it is a bundle of a version
/// this build reads.
pub fn parse_message_header(block: &[u8]) -> Result<String> {
    let bad = |reason: String| BundleError::BadStructure { offset: 0, reason };
    let text = std::str::from_utf8(block).map_err(|_| bad("message header is not ASCII".into()))?;
    let mut boundary = None;
    let mut version = None;
    for line in unfold(text) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("header line without a colon: {line:?}")));
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => {
                let params = split_params(value.trim());
                if !params[0].trim().eq_ignore_ascii_case("multipart/mixed") {
                    return Err(bad(format!(
                        "Content-Type is {:?}, not multipart/mixed",
                        params[0].trim()
                    )));
                }
                for p in &params[1..] {
                    if let Some((n, v)) = p.split_once('=') {
                        if n.trim().eq_ignore_ascii_case("boundary") {
                            boundary = Some(unquote(v.trim()).map_err(bad)?);
                        }
                    }
                }
            }
            "x-bitmountain-bundle" => version = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    match version.as_deref() {
        Some(v) if v == BUNDLE_FORMAT_VERSION.to_string() => {}
        Some(v) => {
            return Err(bad(format!(
                "bundle format version {v} is not supported (this build reads {BUNDLE_FORMAT_VERSION}); upgrade bitmountain"
            )))
        }
        None => return Err(bad("no X-Bitmountain-Bundle header: not a Bit Mountain bundle".into())),
    }
    let boundary = boundary.ok_or_else(|| bad("no boundary parameter in Content-Type".into()))?;
    validate_boundary(&boundary).map_err(|_| bad(format!("boundary {boundary:?} is malformed")))?;
    Ok(boundary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn round_trip(path: &str) -> PartHeaders {
        let header = file_part_header(path, "image/tiff", 42, Some(&[0xab; 32]));
        let block = header.strip_suffix("\r\n\r\n").unwrap();
        parse_part_headers(block.as_bytes(), "test").unwrap()
    }

    #[test]
    fn part_headers_round_trip_for_ascii_and_non_ascii_paths() {
        for path in [
            "pages/0001.tif",
            "Wörterbuch/頁 1.jpg",
            "100%/\"q\"\\b",
            "a b;c=d",
        ] {
            let h = round_trip(path);
            assert_eq!(h.filename.as_deref(), Some(path));
            assert_eq!(h.content_length, Some(42));
            assert_eq!(h.content_type.as_deref(), Some("image/tiff"));
            assert_eq!(h.sha256, Some([0xab; 32]));
        }
    }

    #[test]
    fn boundaries_are_random_and_valid() {
        let a = random_boundary();
        let b = random_boundary();
        assert_ne!(a, b);
        assert!(a.len() >= 32);
        validate_boundary(&a).unwrap();
        let header = message_header(&a);
        let block = header.strip_suffix("\r\n\r\n").unwrap();
        assert_eq!(parse_message_header(block.as_bytes()).unwrap(), a);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        assert!(parse_part_headers(b"Content-Length: x", "p").is_err());
        assert!(parse_part_headers(b"no colon here", "p").is_err());
        assert!(parse_part_headers(b"Content-Transfer-Encoding: base64", "p").is_err());
        assert!(
            parse_part_headers(b"Content-Disposition: attachment; filename*=UTF-8''%E", "p")
                .is_err()
        );
        assert!(
            parse_part_headers(b"Content-Disposition: attachment; filename*=latin1''x", "p")
                .is_err()
        );
        assert!(parse_part_headers(b"X-Bitmountain-Sha256: 12", "p").is_err());
        assert!(parse_message_header(b"Content-Type: text/plain").is_err());
    }

    #[test]
    fn content_types_are_checked() {
        validate_content_type("p", "image/tiff").unwrap();
        validate_content_type("p", "text/plain; charset=utf-8").unwrap();
        for bad in ["", "tiff", "/x", "a/b\r\nX: y", "a/é"] {
            assert!(validate_content_type("p", bad).is_err(), "{bad:?}");
        }
    }
}
