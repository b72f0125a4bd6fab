//! The written result of a comparison: `report.md` (machine, sizes, medians, goals),
//! `results.json` (every run), and SVG charts drawn here — throughput bars per scenario and
//! latency distributions per setup — so the result reads at a glance.

use std::fmt::Write as _;
use std::path::Path;

use super::compare::{Comparison, Plan};
use super::stats::CHART_QUANTILES;

/// Colours of the setups, in report order.
const COLOURS: &[&str] = &[
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
];

/// Write the report files into `dir` (created if missing).
pub fn write(dir: &Path, plan: &Plan, comparison: &Comparison) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({
        "sizes": &plan.sizes,
        "rounds": plan.rounds,
        "comparison": comparison,
        "goals": comparison.goals(),
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?,
    )?;
    let mut charts = Vec::new();
    for key in comparison.keys() {
        let file = format!("rate-{}.svg", key.replace('/', "-"));
        std::fs::write(dir.join(&file), rate_chart(comparison, &key))?;
        charts.push(file);
        if !key.starts_with("idle") {
            let file = format!("latency-{}.svg", key.replace('/', "-"));
            std::fs::write(dir.join(&file), latency_chart(comparison, &key))?;
            charts.push(file);
        }
    }
    std::fs::write(dir.join("report.md"), markdown(plan, comparison, &charts))?;
    Ok(())
}

fn markdown(plan: &Plan, comparison: &Comparison, charts: &[String]) -> String {
    let mut md = String::from("# nonstick benchmark run\n\n");
    let _ = writeln!(md, "Machine: {}.\n", machine());
    let _ = writeln!(
        md,
        "Setups (started and stopped by the harness, scenarios interleaved over {} rounds, medians \
         shown): {}.\n",
        plan.rounds,
        comparison.setups.join(", ")
    );
    for (setup, why) in &comparison.skipped {
        let _ = writeln!(md, "Skipped {setup}: {why}.\n");
    }
    let _ = writeln!(md, "Sizes: `{}`\n", serde_json::json!(plan.sizes));
    md.push_str("## Goals\n\n");
    md.push_str(&comparison.goals_table());
    md.push_str("\n## Medians\n\n");
    md.push_str(&comparison.table());
    md.push_str("\n## Charts\n\n");
    for chart in charts {
        let _ = writeln!(md, "![{chart}]({chart})\n");
    }
    md
}

/// CPU model and count, and memory, from `/proc` (Linux).
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{model}, {cpus} CPUs available, {mem_gib:.1} GiB RAM")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars: the median ops/s of each setup for step `key`.
fn rate_chart(comparison: &Comparison, key: &str) -> String {
    let bars: Vec<(usize, &String, f64)> = comparison
        .setups
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s, comparison.median(s, key, |r| r.rate)?)))
        .collect();
    let (label_w, bar_w, row_h, top) = (190.0, 420.0, 26.0, 40.0);
    let height = top + row_h * bars.len() as f64 + 20.0;
    let max = bars.iter().map(|b| b.2).fold(0.0, f64::max).max(1e-9);
    let unit = if key.starts_with("idle") {
        "sessions held"
    } else {
        "ops/s (median)"
    };
    let mut svg = header(label_w + bar_w + 90.0, height, &format!("{key}: {unit}"));
    for (row, (i, setup, rate)) in bars.iter().enumerate() {
        let y = top + row_h * row as f64;
        let w = bar_w * rate / max;
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{ty}" text-anchor="end">{name}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="18" fill="{c}"/><text x="{vx:.1}" y="{ty}">{rate:.0}</text>"#,
            x = label_w - 8.0,
            ty = y + 13.0,
            name = escape(setup),
            c = COLOURS[i % COLOURS.len()],
            vx = label_w + w + 6.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Latency at each percentile, one line per setup (the run with the median p99).
fn latency_chart(comparison: &Comparison, key: &str) -> String {
    let (left, width, top, height) = (60.0, 520.0, 40.0, 260.0);
    let lines: Vec<(usize, &String, Vec<f64>)> = comparison
        .setups
        .iter()
        .enumerate()
        .filter_map(|(i, setup)| {
            let p99 = comparison.median(setup, key, |r| r.latency.p99_ms)?;
            let run = comparison
                .measurements
                .iter()
                .find(|m| &m.setup == setup && m.key == key && m.report.latency.p99_ms == p99)?;
            (!run.report.quantiles_ms.is_empty())
                .then(|| (i, setup, run.report.quantiles_ms.clone()))
        })
        .collect();
    // Up to the 99.9th percentile: the maximum alone would flatten every other point.
    let shown = CHART_QUANTILES.len() - 1;
    let max = lines
        .iter()
        .flat_map(|l| l.2.iter().take(shown))
        .copied()
        .fold(0.0, f64::max)
        .max(1e-3);
    let total_h = top + height + 50.0 + 18.0 * lines.len() as f64;
    let mut svg = header(
        left + width + 40.0,
        total_h,
        &format!("{key}: latency by percentile (ms)"),
    );
    let x = |i: usize| left + width * i as f64 / (shown - 1) as f64;
    let y = |v: f64| top + height - height * v / max;
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#888"/><text x="{tx}" y="{ty}" text-anchor="end">{max:.2}</text><text x="{tx}" y="{b}" text-anchor="end">0</text>"##,
        b = top + height,
        r = left + width,
        tx = left - 4.0,
        ty = top + 4.0,
    );
    for (i, q) in CHART_QUANTILES.iter().take(shown).enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">p{}</text>"#,
            x(i),
            top + height + 16.0,
            q * 100.0
        );
    }
    for (row, (i, setup, quantiles)) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = quantiles
            .iter()
            .take(shown)
            .enumerate()
            .map(|(j, v)| format!("{:.1},{:.1}", x(j), y(*v)))
            .collect();
        let ly = top + height + 36.0 + 18.0 * row as f64;
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><rect x="{left}" y="{ry}" width="12" height="12" fill="{colour}"/><text x="{tx}" y="{ly}">{}</text>"#,
            points.join(" "),
            escape(setup),
            ry = ly - 10.0,
            tx = left + 18.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(width: f64, height: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    )
}
