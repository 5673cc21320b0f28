//! BagIt (RFC 8493) in and out: `put --bagit BAG` checks a bag is complete and valid before a
//! byte is sent, and `export ID --bagit -o DIR` writes one.
//!
//! What a valid bag is here: `bagit.txt` declaring version 0.97 or 1.0 and UTF-8; at least one
//! payload manifest in SHA-256 or SHA-512 (`manifest-<alg>.txt`), every one listing every file
//! under `data/` and nothing else, each digest matching; tag manifests (`tagmanifest-<alg>.txt`)
//! whose listed tag files exist and match; a `Payload-Oxum` in `bag-info.txt`, when present,
//! equal to the payload's bytes and files; no `fetch.txt` entries (the files must be here).
//! Manifests in algorithms we cannot compute (MD5, SHA-1) are checked for completeness only,
//! and said so. Parsing is pure and unit-tested; [`validate`] reads the files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256, Sha512};

/// Longest tag file read into memory (manifests of millions of files stay far below).
const MAX_TAG_FILE_BYTES: u64 = 512 << 20;
/// Bytes read at a time while hashing payload files.
const HASH_BUFFER_BYTES: usize = 1 << 20;

/// A digest algorithm a manifest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alg {
    Sha256,
    Sha512,
    /// Named, but not computed here (md5, sha1, ...): checked for completeness only.
    Other,
}

impl Alg {
    fn of(name: &str) -> Alg {
        match name {
            "sha256" => Alg::Sha256,
            "sha512" => Alg::Sha512,
            _ => Alg::Other,
        }
    }
}

/// One manifest: path (decoded, relative to the bag) → digest in lowercase hex.
pub type Manifest = BTreeMap<String, String>;

/// Parses `bagit.txt`.
pub fn parse_bagit_txt(text: &str) -> anyhow::Result<()> {
    let fields = parse_tag_fields(text)?;
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match get("BagIt-Version") {
        Some("1.0") | Some("0.97") => {}
        Some(v) => bail!("bagit.txt: BagIt-Version {v} (0.97 and 1.0 are read)"),
        None => bail!("bagit.txt: no BagIt-Version line"),
    }
    match get("Tag-File-Character-Encoding") {
        Some(e) if e.eq_ignore_ascii_case("UTF-8") => Ok(()),
        Some(e) => bail!("bagit.txt: Tag-File-Character-Encoding {e} (only UTF-8 is read)"),
        None => bail!("bagit.txt: no Tag-File-Character-Encoding line"),
    }
}

/// `Name: value` lines, a line starting with a space or tab continuing the value before.
pub fn parse_tag_fields(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = out.last_mut() else {
                bail!("line {}: a continuation line before any field", n + 1);
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("line {}: expected `Name: value`", n + 1))?;
        out.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

/// Parses a manifest: `<digest> <path>` per line, paths percent-decoded (`%0A`, `%0D`, `%25`).
pub fn parse_manifest(text: &str, name: &str) -> anyhow::Result<Manifest> {
    let mut out = Manifest::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line = line.trim_end_matches('\r');
        let (digest, path) = line
            .split_once([' ', '\t'])
            .with_context(|| format!("{name} line {}: expected `<digest> <path>`", n + 1))?;
        let digest = digest.to_ascii_lowercase();
        if digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{name} line {}: {digest:?} is not a hex digest", n + 1);
        }
        let path = decode_path(path.trim_start_matches([' ', '\t']));
        let path = path.strip_prefix("./").unwrap_or(&path).to_owned();
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            bail!(
                "{name} line {}: {path:?} is not a path inside the bag",
                n + 1
            );
        }
        if out.insert(path.clone(), digest).is_some() {
            bail!("{name} line {}: {path:?} is listed twice", n + 1);
        }
    }
    Ok(out)
}

fn decode_path(p: &str) -> String {
    p.replace("%0A", "\n")
        .replace("%0a", "\n")
        .replace("%0D", "\r")
        .replace("%0d", "\r")
        .replace("%25", "%")
}

/// A path as a manifest line writes it.
pub fn encode_path(p: &str) -> String {
    p.replace('%', "%25")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
}

/// `Payload-Oxum: <octets>.<streams>`.
pub fn parse_oxum(value: &str) -> anyhow::Result<(u64, u64)> {
    let (octets, streams) = value
        .split_once('.')
        .with_context(|| format!("Payload-Oxum {value:?}: expected <bytes>.<files>"))?;
    Ok((
        octets
            .parse()
            .with_context(|| format!("Payload-Oxum {value:?}: bytes"))?,
        streams
            .parse()
            .with_context(|| format!("Payload-Oxum {value:?}: files"))?,
    ))
}

/// What a valid bag holds.
#[derive(Debug, Clone, Default)]
pub struct ValidBag {
    /// Every file of the bag (payload and tag files), relative path → SHA-256.
    pub sha256: BTreeMap<String, [u8; 32]>,
    /// `bag-info.txt`'s fields, in order.
    pub info: Vec<(String, String)>,
    /// Payload bytes and files.
    pub payload_bytes: u64,
    pub payload_files: u64,
    /// Manifests present but not verified (their algorithm is not computed here).
    pub unverified: Vec<String>,
}

/// Checks the bag in `dir` (module docs); every file's SHA-256 comes back for the upload to
/// send as its expected digest. An invalid bag is refused naming the file and the problem.
pub fn validate(dir: &Path) -> anyhow::Result<ValidBag> {
    let files = bitmountain_client::walk::walk_files(dir)?;
    let read_tag = |name: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("{}: not a bag (no {name})", dir.display()))?
            .len();
        if len > MAX_TAG_FILE_BYTES {
            bail!("{name} is {len} bytes; at most {MAX_TAG_FILE_BYTES} are read");
        }
        std::fs::read_to_string(&path).with_context(|| format!("{name} is not UTF-8 text"))
    };
    parse_bagit_txt(&read_tag("bagit.txt")?)?;
    let names: BTreeSet<String> = files.iter().map(|f| f.relative.clone()).collect();
    if names.contains("fetch.txt") && !read_tag("fetch.txt")?.trim().is_empty() {
        bail!("fetch.txt lists files to fetch: fetch them into data/ and drop fetch.txt first");
    }
    let payload: BTreeSet<String> = names
        .iter()
        .filter(|n| n.starts_with("data/"))
        .cloned()
        .collect();
    let mut manifests = Vec::new();
    let mut tag_manifests = Vec::new();
    for name in &names {
        if let Some(alg) = strip(name, "manifest-") {
            manifests.push((
                name.clone(),
                Alg::of(alg),
                parse_manifest(&read_tag(name)?, name)?,
            ));
        } else if let Some(alg) = strip(name, "tagmanifest-") {
            tag_manifests.push((
                name.clone(),
                Alg::of(alg),
                parse_manifest(&read_tag(name)?, name)?,
            ));
        }
    }
    if manifests.is_empty() {
        bail!("no payload manifest (manifest-sha256.txt or manifest-sha512.txt)");
    }
    if !manifests.iter().any(|(_, alg, _)| *alg != Alg::Other) {
        bail!(
            "no payload manifest in SHA-256 or SHA-512: the bag's digests cannot be checked here"
        );
    }
    for (name, _, m) in &manifests {
        if let Some(p) = payload.iter().find(|p| !m.contains_key(*p)) {
            bail!("{p} is in data/ but not in {name}");
        }
        if let Some(p) = m.keys().find(|p| !payload.contains(*p)) {
            bail!("{name} lists {p}, which is not in the bag's data/");
        }
    }
    for (name, _, m) in &tag_manifests {
        if let Some(p) = m.keys().find(|p| !names.contains(*p)) {
            bail!("{name} lists {p}, which is not in the bag");
        }
        if let Some(p) = m.keys().find(|p| p.starts_with("data/")) {
            bail!("{name} lists {p}, a payload file (tag manifests list tag files only)");
        }
    }
    let mut bag = ValidBag::default();
    for f in &files {
        let (sha256, sha512, len) = hash_file(&dir.join(&f.relative))?;
        let (hex256, hex512) = (hex::encode(sha256), hex::encode(sha512));
        for (name, alg, m) in manifests.iter().chain(&tag_manifests) {
            let want = match m.get(&f.relative) {
                Some(w) => w,
                None => continue,
            };
            let got = match alg {
                Alg::Sha256 => &hex256,
                Alg::Sha512 => &hex512,
                Alg::Other => continue,
            };
            if want != got {
                bail!(
                    "{}: {name} says {want}, the file's bytes hash to {got}",
                    f.relative
                );
            }
        }
        if payload.contains(&f.relative) {
            bag.payload_bytes += len;
            bag.payload_files += 1;
        }
        bag.sha256.insert(f.relative.clone(), sha256);
    }
    if names.contains("bag-info.txt") {
        bag.info = parse_tag_fields(&read_tag("bag-info.txt")?).context("bag-info.txt")?;
    }
    if let Some((_, oxum)) = bag.info.iter().find(|(k, _)| k == "Payload-Oxum") {
        let (octets, streams) = parse_oxum(oxum)?;
        if (octets, streams) != (bag.payload_bytes, bag.payload_files) {
            bail!(
                "bag-info.txt: Payload-Oxum {oxum} but data/ holds {} bytes in {} files",
                bag.payload_bytes,
                bag.payload_files
            );
        }
    }
    bag.unverified = manifests
        .iter()
        .chain(&tag_manifests)
        .filter(|(_, alg, _)| *alg == Alg::Other)
        .map(|(n, _, _)| n.clone())
        .collect();
    Ok(bag)
}

/// `manifest-sha256.txt` with `prefix` `manifest-` → `sha256`.
fn strip<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)?.strip_suffix(".txt")
}

fn hash_file(path: &Path) -> anyhow::Result<([u8; 32], [u8; 64], u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut a, mut b, mut len) = (Sha256::new(), Sha512::new(), 0u64);
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        a.update(&buf[..n]);
        b.update(&buf[..n]);
        len += n as u64;
    }
    Ok((a.finalize().into(), b.finalize().into(), len))
}

/// Whether a bundle's paths are a bag's: `bagit.txt` and a payload manifest at the top, every
/// other file under `data/` or a tag file at the top.
pub fn is_bag(paths: &[&str]) -> bool {
    paths.contains(&"bagit.txt")
        && paths.iter().any(|p| strip(p, "manifest-").is_some())
        && paths.iter().any(|p| p.starts_with("data/"))
}

/// A payload file of a bag being written.
#[derive(Debug, Clone)]
pub struct PayloadFile {
    /// Path in the bag (under `data/`).
    pub path: String,
    pub bytes: u64,
    pub sha256: [u8; 32],
    pub sha512: [u8; 64],
}

/// The tag files of a bag made from a bundle: `bagit.txt`, `bag-info.txt`, the payload
/// manifests in SHA-256 and SHA-512, and the tag manifests over them.
pub fn tag_files(files: &[PayloadFile], info: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    let bagit = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n".to_vec();
    let (bytes, count) = (files.iter().map(|f| f.bytes).sum::<u64>(), files.len());
    let mut bag_info = String::new();
    for (k, v) in info {
        bag_info.push_str(&format!("{k}: {v}\n"));
    }
    bag_info.push_str(&format!("Payload-Oxum: {bytes}.{count}\n"));
    let manifest = |hexes: fn(&PayloadFile) -> String| {
        let mut m = String::new();
        for f in files {
            m.push_str(&format!("{}  {}\n", hexes(f), encode_path(&f.path)));
        }
        m.into_bytes()
    };
    let mut out = vec![
        ("bagit.txt".to_owned(), bagit),
        ("bag-info.txt".to_owned(), bag_info.into_bytes()),
        (
            "manifest-sha256.txt".to_owned(),
            manifest(|f| hex::encode(f.sha256)),
        ),
        (
            "manifest-sha512.txt".to_owned(),
            manifest(|f| hex::encode(f.sha512)),
        ),
    ];
    let mut tags256 = String::new();
    let mut tags512 = String::new();
    for (name, bytes) in &out {
        tags256.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(bytes))));
        tags512.push_str(&format!("{}  {name}\n", hex::encode(Sha512::digest(bytes))));
    }
    out.push(("tagmanifest-sha256.txt".to_owned(), tags256.into_bytes()));
    out.push(("tagmanifest-sha512.txt".to_owned(), tags512.into_bytes()));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn tag_files_parse_with_continuations() {
        let f =
            parse_tag_fields("Source-Organization: Archive\nExternal-Description: one\n  two\n")
                .unwrap();
        assert_eq!(f[1], ("External-Description".into(), "one two".into()));
        assert!(parse_tag_fields(" orphan\n").is_err());
        assert!(parse_tag_fields("no colon here\n").is_err());
        assert!(
            parse_bagit_txt("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n").is_ok()
        );
        assert!(
            parse_bagit_txt("BagIt-Version: 2.0\nTag-File-Character-Encoding: UTF-8\n").is_err()
        );
        assert!(
            parse_bagit_txt("BagIt-Version: 1.0\nTag-File-Character-Encoding: Latin-1\n").is_err()
        );
    }

    #[test]
    fn manifests_parse_and_refuse_what_is_not_a_bag_path() {
        let m = parse_manifest("ABC  data/a%25b.txt\ndef data/x%0Ay\n", "m").unwrap();
        assert_eq!(m["data/a%b.txt"], "abc");
        assert_eq!(m["data/x\ny"], "def");
        assert!(parse_manifest("abc  ../etc/passwd\n", "m").is_err());
        assert!(parse_manifest("abc  /etc/passwd\n", "m").is_err());
        assert!(parse_manifest("xyz  data/a\n", "m").is_err());
        assert!(parse_manifest("abc  data/a\nabc  data/a\n", "m").is_err());
        assert_eq!(encode_path("a%b\nc"), "a%25b%0Ac");
        assert_eq!(parse_oxum("10.2").unwrap(), (10, 2));
        assert!(parse_oxum("10").is_err());
    }

    fn write_bag(dir: &Path) {
        let files = vec![PayloadFile {
            path: "data/page 1.txt".to_owned(),
            bytes: 5,
            sha256: Sha256::digest(b"hello").into(),
            sha512: Sha512::digest(b"hello").into(),
        }];
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/page 1.txt"), b"hello").unwrap();
        for (name, bytes) in tag_files(&files, &[("Source-Organization".into(), "Us".into())]) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn a_bag_we_write_validates_and_each_defect_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_bag(dir.path());
        let bag = validate(dir.path()).unwrap();
        assert_eq!((bag.payload_bytes, bag.payload_files), (5, 1));
        assert_eq!(bag.sha256.len(), 7);
        assert!(bag
            .info
            .iter()
            .any(|(k, v)| k == "Source-Organization" && v == "Us"));

        std::fs::write(dir.path().join("data/page 1.txt"), b"hellO").unwrap();
        let e = validate(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("data/page 1.txt") && e.contains("hash to"),
            "{e}"
        );
        std::fs::write(dir.path().join("data/page 1.txt"), b"hello").unwrap();

        std::fs::write(dir.path().join("data/extra.txt"), b"x").unwrap();
        let e = validate(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("data/extra.txt is in data/ but not in manifest"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("data/extra.txt")).unwrap();

        std::fs::remove_file(dir.path().join("data/page 1.txt")).unwrap();
        let e = validate(dir.path()).unwrap_err().to_string();
        assert!(e.contains("lists data/page 1.txt"), "{e}");
    }
}
