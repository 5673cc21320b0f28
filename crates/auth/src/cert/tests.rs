//! Tests of the CA, issuing, and reading roles back (`cert`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;

use rustls_pki_types::ServerName;

use super::*;

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

/// Verifies `leaf` against `ca` as rustls does for a peer, for `usage`.
fn chain(
    leaf: &CertificateDer<'_>,
    ca: &CertificateDer<'_>,
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let anchor = webpki::anchor_from_trusted_cert(ca).unwrap();
    let leaf = EndEntityCert::try_from(leaf).unwrap();
    leaf.verify_for_usage(
        SIGNATURE_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
}

#[test]
fn a_ca_issues_leaves_that_carry_their_role_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let ca = init_ca(&ca_dir).unwrap();
    assert_eq!(mode(&ca.key), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);
    let err = init_ca(&ca_dir).unwrap_err();
    assert!(matches!(err, CertError::CaExists { .. }), "{err}");
    let ca_der = der(&ca.cert);
    // A CA is not a peer.
    assert_eq!(peer_identity(&ca_der), None);

    for (role, name, list) in [
        (PeerRole::Meta, "m1", hosts(&["127.0.0.1", "meta1.example"])),
        (PeerRole::Node, "n-1.a_b", hosts(&["::1", "localhost"])),
    ] {
        let out = tmp.path().join(name);
        let issued = issue(&ca_dir, name, role, &list, &out).unwrap();
        assert_eq!(mode(&issued.key), 0o600);
        assert_eq!(fs::read(&issued.ca).unwrap(), fs::read(&ca.cert).unwrap());
        let leaf = der(&issued.cert);
        let id = peer_identity(&leaf).unwrap();
        assert_eq!((id.role, id.name.as_str()), (role, name));
        assert_eq!(issued.identity, id);
        // Both ends of a connection accept it: server and client EKUs.
        chain(&leaf, &ca_der, webpki::KeyUsage::server_auth()).unwrap();
        chain(&leaf, &ca_der, webpki::KeyUsage::client_auth()).unwrap();
        // Valid for each host given, IP or DNS, and no other.
        let cert = EndEntityCert::try_from(&leaf).unwrap();
        for host in &list {
            let sn = ServerName::try_from(host.as_str()).unwrap();
            cert.verify_is_valid_for_subject_name(&sn).unwrap();
        }
        let other = ServerName::try_from("10.9.9.9").unwrap();
        assert!(cert.verify_is_valid_for_subject_name(&other).is_err());
        // The directory reads back as `meta` and `node` will read it.
        let files = read_tls_dir(&out).unwrap();
        assert_eq!(files.identity, id);
        assert!(!format!("{files:?}").contains("PRIVATE"));

        let err = issue(&ca_dir, name, role, &list, &out).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
    }
}

#[test]
fn a_leaf_of_another_ca_is_told_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ca_a = init_ca(&a).unwrap();
    let ca_b = init_ca(&b).unwrap();
    assert_ne!(ca_a.common_name, ca_b.common_name);
    let out = tmp.path().join("n");
    issue(&b, "n1", PeerRole::Node, &hosts(&["10.0.0.5"]), &out).unwrap();
    let leaf = der(&out.join(CERT_FILE));
    let a_der = der(&ca_a.cert);
    let err = chain(&leaf, &a_der, webpki::KeyUsage::client_auth()).unwrap_err();
    assert!(matches!(err, webpki::Error::UnknownIssuer), "{err:?}");
    let a_cert = EndEntityCert::try_from(&a_der).unwrap();
    assert_ne!(
        EndEntityCert::try_from(&leaf).unwrap().issuer(),
        a_cert.subject()
    );
    // Its role still parses: the chain check is TLS's, before a request gets here.
    assert!(peer_identity(&leaf).is_some());
    // Issuing into a directory holding another CA's `ca.pem` is refused.
    let err = issue(&a, "n2", PeerRole::Node, &hosts(&["10.0.0.6"]), &out).unwrap_err();
    assert!(matches!(err, CertError::Exists { .. }), "{err}");
}

#[test]
fn bad_inputs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let out = tmp.path().join("out");
    let h = hosts(&["127.0.0.1"]);
    let err = issue(&ca_dir, "n1", PeerRole::Node, &h, &out).unwrap_err();
    assert!(matches!(err, CertError::NoCa { .. }), "{err}");
    assert!(err.to_string().contains("cert init"), "{err}");
    init_ca(&ca_dir).unwrap();
    for bad in [hosts(&[]), hosts(&[" ", ""])] {
        let err = issue(&ca_dir, "n1", PeerRole::Node, &bad, &out).unwrap_err();
        assert!(matches!(err, CertError::NoHost), "{err}");
    }
    for bad in [
        "10.0.0.1:7700",
        "a b",
        "-x.example",
        "a..b",
        "é.example",
        "http://x",
    ] {
        let err = issue(&ca_dir, "n1", PeerRole::Node, &hosts(&[bad]), &out).unwrap_err();
        assert!(matches!(err, CertError::InvalidHost { .. }), "{bad}: {err}");
    }
    for bad in ["", "..", "a/b", "a b", &"x".repeat(65)] {
        let err = issue(&ca_dir, bad, PeerRole::Node, &h, &out).unwrap_err();
        assert!(matches!(err, CertError::InvalidName { .. }), "{bad}: {err}");
    }
    assert!(matches!(
        "admin".parse::<PeerRole>(),
        Err(CertError::UnknownRole { .. })
    ));
    assert!(!out.exists(), "nothing written on refusal");
    // A key that is not the CA's.
    let key = ca_dir.join(CA_KEY_FILE);
    let other = tmp.path().join("other");
    init_ca(&other).unwrap();
    fs::remove_file(&key).unwrap();
    fs::copy(other.join(CA_KEY_FILE), &key).unwrap();
    let err = issue(&ca_dir, "n1", PeerRole::Node, &h, &out).unwrap_err();
    assert!(err.to_string().contains("not the key"), "{err}");
    // Not a certificate at all.
    fs::write(ca_dir.join(CA_CERT_FILE), "not a pem").unwrap();
    let err = issue(&ca_dir, "n1", PeerRole::Node, &h, &out).unwrap_err();
    assert!(matches!(err, CertError::BadCa { .. }), "{err}");
    assert!(!out.exists(), "nothing written on refusal");
    // Garbage is no identity.
    assert_eq!(peer_identity(b""), None);
    assert_eq!(peer_identity(&[0x30; 200]), None);
}

#[test]
fn a_ca_made_elsewhere_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    fs::create_dir(&ca_dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = ca_params(&key);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "Someone else's CA");
    let cert = p.self_signed(&key).unwrap();
    fs::write(ca_dir.join(CA_CERT_FILE), cert.pem()).unwrap();
    fs::write(ca_dir.join(CA_KEY_FILE), key.serialize_pem()).unwrap();
    let out = tmp.path().join("out");
    let err = issue(&ca_dir, "n1", PeerRole::Node, &hosts(&["::1"]), &out).unwrap_err();
    assert!(err.to_string().contains("cert init"), "{err}");
    assert!(!out.exists());
}

#[test]
fn only_one_well_formed_role_uri_names_a_peer() {
    let with = |uris: &[&str]| -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(hosts(&["127.0.0.1"])).unwrap();
        for u in uris {
            p.subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        p.self_signed(&key).unwrap().der().to_vec()
    };
    assert_eq!(
        peer_identity(&with(&["spiffe://bitmountain/node/n1"])),
        Some(PeerIdentity {
            role: PeerRole::Node,
            name: "n1".into()
        })
    );
    for uris in [
        &[][..],
        &[
            "spiffe://bitmountain/node/n1",
            "spiffe://bitmountain/meta/m1",
        ][..],
        &["spiffe://other/node/n1"][..],
        &["spiffe://bitmountain/admin/n1"][..],
        &["spiffe://bitmountain/node/n1/x"][..],
        &["spiffe://bitmountain/node/"][..],
    ] {
        assert_eq!(peer_identity(&with(uris)), None, "{uris:?}");
    }
}

#[test]
fn a_tls_dir_without_a_ca_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    init_ca(&ca_dir).unwrap();
    let out = tmp.path().join("m");
    issue(&ca_dir, "m1", PeerRole::Meta, &hosts(&["127.0.0.1"]), &out).unwrap();
    fs::write(out.join(CA_CERT_FILE), "").unwrap();
    let err = read_tls_dir(&out).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    let err = read_tls_dir(&tmp.path().join("missing")).unwrap_err();
    assert!(matches!(err, CertError::Io { .. }), "{err}");
}
