//! `bitmountain durability` as a user runs it: the real binary, its table, JSON and SVG output,
//! and its errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitmountain_tests::{run, run_ok};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn single_scheme_table_shows_both_methods() {
    let out = text(run_ok(&[
        "durability",
        "--code",
        "10+4",
        "--disks",
        "200",
        "--trials",
        "200",
    ]));
    for needle in [
        "RS(10,4)",
        "1.40x raw/usable",
        "analytic (Markov)",
        "simulation (200 trials x 10 years, seed 1)",
        "P(loss) in 1 year",
        "P(loss) in 10 years",
        "MTTDL",
        "bytes lost per year",
        "independent groups",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn json_output_agrees_between_methods_for_two_copies() {
    // Two copies on 100 disks lose data often enough to simulate: P(10 y) is about 2%.
    let out = text(run_ok(&[
        "durability",
        "--copies",
        "2",
        "--disks",
        "100",
        "--trials",
        "4000",
        "--sim-repair",
        "markov",
        "--json",
    ]));
    // The tests crate has no JSON parser; pick the two numbers out by key.
    let number_after = |key: &str, from: usize| -> f64 {
        let at = out[from..].find(key).unwrap() + from + key.len();
        let rest = out[at..].trim_start_matches([':', ' ', '"']);
        let end = rest.find([',', '\n', '}']).unwrap();
        rest[..end].trim().parse().unwrap()
    };
    let analytic_at = out.find("\"analytic\"").unwrap();
    let analytic = number_after("\"p_loss_horizon\"", analytic_at);
    let sim_at = out.find("\"simulation\": {").unwrap();
    let horizon_at = out[sim_at..].find("\"p_loss_horizon\"").unwrap() + sim_at;
    let low = number_after("\"low\"", horizon_at);
    let high = number_after("\"high\"", horizon_at);
    assert!(
        low <= analytic && analytic <= high,
        "analytic {analytic} outside simulated [{low}, {high}]"
    );
}

#[test]
fn compare_table_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("loss.svg");
    let out = text(run_ok(&[
        "durability",
        "--compare",
        "--trials",
        "0",
        "--svg",
        svg.to_str().unwrap(),
    ]));
    for scheme in ["RS(10,4)", "RS(6,3)", "RS(4,2)", "3 copies", "2 copies"] {
        assert!(out.contains(scheme), "missing {scheme} in:\n{out}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("</svg>"));
    assert_eq!(plot.matches("<polyline").count(), 5);
}

#[test]
fn the_running_cluster_is_modelled_as_its_leader_reports_it() {
    let cluster = bitmountain_tests::cluster::Cluster::start(3, 2, "2+1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(cluster.client(1).put_files(
        [bitmountain_client::UploadFile::from_bytes(
            "a.bin",
            vec![1u8; 2_000_000],
        )],
        &bitmountain_client::PutOptions::default(),
    ))
    .unwrap();
    // A second code in use: 1+2 (three copies' worth of safety at 3x the space).
    rt.block_on(cluster.client(1).put_files(
        [bitmountain_client::UploadFile::from_bytes(
            "b.bin",
            vec![2u8; 1_000_000],
        )],
        &bitmountain_client::PutOptions {
            code: Some(bitmountain_client::Code::parse("1+2").unwrap()),
            ..Default::default()
        },
    ))
    .unwrap();
    let addr = cluster.addr(1);
    let out = run(&["durability", "--cluster", &addr, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["inputs"]["disk_capacity_bytes"].as_array().unwrap().len(),
        6
    );
    assert_eq!(v["inputs"]["nodes"], 3);
    assert!(v["inputs"]["used_bytes"].as_u64().unwrap() >= 2_000_000);
    // The disks' years of service are known (moments): the posterior is the prior, nearly.
    assert_eq!(v["estimate"]["afr_observed"], true);
    assert!((v["estimate"]["afr"].as_f64().unwrap() - 0.02).abs() < 1e-6);
    assert_eq!(v["inputs"]["failed_disks"], 0);
    // Both codes in use, by their bundles' bytes (the files and the bundle's index).
    let codes = v["inputs"]["codes_in_use"].as_array().unwrap();
    assert_eq!(codes.len(), 2, "{codes:?}");
    let bytes_of = |k: u64, m: u64| {
        codes
            .iter()
            .find(|c| c["scheme"]["k"] == k && c["scheme"]["m"] == m)
            .unwrap_or_else(|| panic!("no RS({k},{m}) in {codes:?}"))["data_bytes"]
            .as_u64()
            .unwrap()
    };
    assert!((2_000_000..2_100_000).contains(&bytes_of(2, 1)));
    assert!((1_000_000..1_100_000).contains(&bytes_of(1, 2)));
    assert_eq!(v["estimate"]["by_code"].as_array().unwrap().len(), 2);
    let p = v["estimate"]["p_loss_per_year"].as_f64().unwrap();
    assert!(p > 0.0 && p < 1.0, "{p}");
    // The leader computed the same figure from the same view (prior 2 %, the same rate).
    let reported = v["reported_by_member"].as_f64().unwrap();
    assert!((reported - p).abs() <= p * 1e-6, "{reported} against {p}");
    let human = run(&["durability", "--cluster", &addr]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("P(losing any bundle within a year)"),
        "{text}"
    );
    assert!(text.contains("6 disks in service on 3 nodes"), "{text}");
    assert!(
        text.contains("code RS(1,2)") && text.contains("code RS(2,1)"),
        "{text}"
    );
    // `status` shows it too.
    let status = run(&["status", "--cluster", &addr, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        s["durability_loss_probability_per_year"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    // A disk fails: one failure seen over moments of service moves the AFR to
    // (2 % × 100 + 1) / 100 disk-years = 3 %, and the disk leaves service.
    run_ok(&["disk", "fail", "6", "--cluster", &addr]);
    let v: serde_json::Value =
        serde_json::from_slice(&run_ok(&["durability", "--cluster", &addr, "--json"])).unwrap();
    assert_eq!(v["inputs"]["failed_disks"], 1, "{v}");
    assert_eq!(
        v["inputs"]["disk_capacity_bytes"].as_array().unwrap().len(),
        5
    );
    assert!(
        (v["estimate"]["afr"].as_f64().unwrap() - 0.03).abs() < 1e-6,
        "{v}"
    );
}

#[test]
fn bad_inputs_name_the_value() {
    let out = run(&["durability", "--code", "10+4", "--disks", "12"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only 12"), "{err}");
    let out = run(&["durability", "--afr", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("annual failure rate 0"));
}
