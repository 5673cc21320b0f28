//! The comparison the project is built on: RS(10,4), RS(6,3), RS(4,2), 3 copies and 2 copies on
//! the same disks (equal raw capacity), as rows and as an SVG plot of loss probability against
//! repair speed.

use serde::Serialize;

use crate::error::Result;
use crate::markov::{analyze, Analytic};
use crate::model::{comparison_schemes, ClusterParams, Scheme};
use crate::sim::{simulate, SimConfig, SimResult};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    pub analytic: Analytic,
    pub simulation: Option<SimResult>,
}

/// Every comparison scheme on `base`'s cluster; simulated too when `sim` is given.
pub fn compare(
    base: &ClusterParams,
    horizon_years: f64,
    sim: Option<&SimConfig>,
) -> Result<Vec<ComparisonRow>> {
    comparison_schemes()
        .into_iter()
        .map(|scheme| {
            let params = with_scheme(base, scheme);
            params.validate()?;
            let simulation = sim.map(|config| simulate(&params, config)).transpose()?;
            Ok(ComparisonRow {
                analytic: analyze(&params, horizon_years),
                simulation,
            })
        })
        .collect()
}

fn with_scheme(base: &ClusterParams, scheme: Scheme) -> ClusterParams {
    ClusterParams {
        scheme,
        ..base.clone()
    }
}

/// One plotted line: the scheme's label and (repair bytes/s per disk, P(loss)) points.
pub type Series = (String, Vec<(f64, f64)>);

/// Repair speeds the plot covers: 1 MB/s to 1 GB/s per disk, evenly on a log scale.
pub fn plot_speeds() -> Vec<f64> {
    (0..=24).map(|i| 1e6 * 10f64.powf(i as f64 / 8.0)).collect()
}

/// Analytic P(loss within `horizon_years`) for every comparison scheme at each repair speed.
pub fn loss_vs_repair_speed(
    base: &ClusterParams,
    horizon_years: f64,
    speeds: &[f64],
) -> Result<Vec<Series>> {
    comparison_schemes()
        .into_iter()
        .map(|scheme| {
            let mut params = with_scheme(base, scheme);
            params.validate()?;
            let points = speeds
                .iter()
                .map(|&speed| {
                    params.repair_bytes_per_sec = speed;
                    (speed, analyze(&params, horizon_years).p_loss_horizon)
                })
                .collect();
            Ok((scheme.label(), points))
        })
        .collect()
}

/// A self-contained SVG (no scripts, no external fonts) of loss probability against repair
/// speed, both on log scales.
pub fn svg_plot(base: &ClusterParams, horizon_years: f64) -> Result<String> {
    let series = loss_vs_repair_speed(base, horizon_years, &plot_speeds())?;
    const FLOOR: f64 = 1e-30;
    let (width, height) = (860.0, 560.0);
    let (left, right, top, bottom) = (90.0, 190.0, 60.0, 70.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let min_p = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|&(_, p)| p))
        .filter(|p| *p > 0.0)
        .fold(1.0f64, f64::min)
        .max(FLOOR);
    let y_lo = min_p.log10().floor();
    let y_hi = 0.0;
    let (x_lo, x_hi) = (6.0, 9.0);
    let x_of = |speed: f64| left + (speed.log10() - x_lo) / (x_hi - x_lo) * plot_w;
    let y_of = |p: f64| {
        let l = p.max(FLOOR).log10().clamp(y_lo, y_hi);
        top + (y_hi - l) / (y_hi - y_lo) * plot_h
    };
    let colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#666666"];
    let mut svg = String::new();
    svg.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    svg.push_str(&format!(
        "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"28\" font-size=\"16\" text-anchor=\"middle\">P(data loss within {} \
         years) vs repair speed: {} disks of {}, AFR {}%, {}% full</text>\n",
        left + plot_w / 2.0,
        horizon_years,
        base.disks,
        crate::units::format_bytes(base.disk_bytes as f64),
        base.disk_afr * 100.0,
        base.fill_fraction * 100.0
    ));
    // Grid and ticks: one line per decade.
    let mut decade = y_lo as i32;
    let step = (((y_hi - y_lo) / 10.0).ceil() as i32).max(1);
    while decade <= y_hi as i32 {
        let y = y_of(10f64.powi(decade));
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{decade}</text>\n",
            left + plot_w,
            left - 6.0,
            y + 4.0
        ));
        decade += step;
    }
    for (exp, label) in [
        (6, "1 MB/s"),
        (7, "10 MB/s"),
        (8, "100 MB/s"),
        (9, "1 GB/s"),
    ] {
        let x = x_of(10f64.powi(exp));
        svg.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            top + plot_h,
            top + plot_h + 18.0
        ));
    }
    svg.push_str(&format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" \
         stroke=\"black\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">repair traffic per disk (bytes/s, \
         log scale)</text>\n\
         <text transform=\"translate(24 {:.1}) rotate(-90)\" text-anchor=\"middle\">probability \
         of losing any data (log scale)</text>\n",
        left + plot_w / 2.0,
        height - 24.0,
        top + plot_h / 2.0
    ));
    for (i, (label, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(s, p)| format!("{:.1},{:.1}", x_of(s), y_of(p)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        let ly = top + 20.0 + 22.0 * i as f64;
        let lx = left + plot_w + 16.0;
        let overhead = comparison_schemes()[i].overhead();
        svg.push_str(&format!(
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" \
             stroke-width=\"3\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{label} ({overhead:.2}x)</text>\n",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{:.1}\" font-size=\"10\" fill=\"#555\">values below 1e{} are \
         drawn at the bottom edge; analytic model, bitmountain durability</text>\n</svg>\n",
        height - 6.0,
        y_lo
    ));
    Ok(svg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn loss_falls_as_repair_speeds_up() {
        let base = ClusterParams::new(Scheme::Rs { k: 10, m: 4 });
        for (label, points) in loss_vs_repair_speed(&base, 10.0, &plot_speeds()).unwrap() {
            for pair in points.windows(2) {
                assert!(pair[1].1 <= pair[0].1, "{label}: {pair:?}");
            }
        }
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let base = ClusterParams::new(Scheme::Rs { k: 10, m: 4 });
        let svg = svg_plot(&base, 10.0).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        for label in ["RS(10,4)", "RS(6,3)", "RS(4,2)", "3 copies", "2 copies"] {
            assert!(svg.contains(label), "{label}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
