//! Checksum manifests in `sha256sum` format, for fixity at ingest (`put --manifest FILE`):
//! one line per file, `<64 hex digits><two spaces or space-asterisk><path>`, paths relative to
//! the directory being uploaded (a leading `./` is dropped). Blank lines are skipped; anything
//! else is refused with its line number.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};

/// Most bytes of a manifest read into memory.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Parses a manifest's text: path → SHA-256.
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, [u8; 32]>> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (hex, rest) = line
            .split_at_checked(64)
            .with_context(|| format!("line {n}: expected 64 hex digits, two spaces and a path"))?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex.to_ascii_lowercase(), &mut digest)
            .with_context(|| format!("line {n}: {hex:?} is not a SHA-256 in hex"))?;
        let path = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .with_context(|| {
                format!("line {n}: expected two spaces (or \" *\") after the digest")
            })?;
        let path = path.strip_prefix("./").unwrap_or(path);
        if path.is_empty() {
            bail!("line {n}: no path");
        }
        if out.insert(path.to_owned(), digest).is_some() {
            bail!("line {n}: {path:?} is listed twice");
        }
    }
    Ok(out)
}

/// Reads and parses a manifest file.
pub fn read(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, [u8; 32]>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_MANIFEST_BYTES {
        bail!(
            "{} is {len} bytes; a manifest may have at most {MAX_MANIFEST_BYTES}",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (a manifest is UTF-8 text)", path.display()))?;
    parse(&text).with_context(|| format!("manifest {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn reads_sha256sum_output_and_refuses_anything_else() {
        let text = format!(
            "{A}  pages/0001.tif\n\n{}  ./notes.txt\n{A} *bin/x\n",
            A.to_uppercase()
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(hex::encode(m["notes.txt"]), A);
        assert!(m.contains_key("bin/x"));
        for bad in [
            format!("{A} one-space"),
            format!("{}  x", &A[..63]),
            format!("{}g  x", &A[..63]),
            format!("{A}  "),
            format!("{A}  a\n{A}  a"),
            "short".to_string(),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        let err = parse(&format!("{A}  a\nnot a line"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
