//! Latency percentiles over time as an SVG line chart, with the chaos
//! events marked, so a spike during a migration is visible at a glance.

use std::fmt::Write;

use crate::report::{Report, Second};
use crate::scenario::ChaosAction;

/// A line: its name, colour and value per second.
type Series = (&'static str, &'static str, fn(&Second) -> u64);

const W: f64 = 900.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

pub fn svg(report: &Report) -> String {
    let points = &report.timeline;
    let seconds = points.last().map_or(1, |p| p.second + 1).max(1) as f64;
    let top_us = points.iter().map(|p| p.max).max().unwrap_or(1).max(10) as f64;
    // Log scale: latencies span decades (µs round trips, ms pauses).
    let low_us = points.iter().map(|p| p.p50).min().unwrap_or(1).max(1) as f64;
    let first = low_us.log10().floor().max(0.0);
    let last = top_us.log10().ceil().max(first + 1.0);
    let x = |s: f64| LEFT + (s / seconds) * (W - LEFT - RIGHT);
    let y = |us: u64| {
        let v = ((us.max(1) as f64).log10() - first) / (last - first);
        H - BOTTOM - v.clamp(0.0, 1.0) * (H - TOP - BOTTOM)
    };
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        o,
        r#"<text x="{LEFT}" y="22" font-size="14">{} — round-trip latency per second (µs, log scale)</text>"#,
        escape(&report.scenario.name)
    );
    for d in first as u32..=last as u32 {
        let us = 10u64.pow(d);
        let yy = y(us);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            label(us)
        );
    }
    let step = ((seconds / 10.0).ceil() as usize).max(1);
    for s in (0..=seconds as usize).step_by(step) {
        let xx = x(s as f64);
        let _ = write!(
            o,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{s}s</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }
    let warm = report.scenario.warmup.as_secs_f64();
    if warm > 0.0 {
        let _ = write!(
            o,
            r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{}" fill="#f4f4f4"/><text x="{:.1}" y="{}" fill="#999">warm-up</text>"##,
            x(warm) - LEFT,
            H - TOP - BOTTOM,
            LEFT + 4.0,
            TOP + 14.0
        );
    }
    for e in &report.scenario.chaos {
        let xx = x(e.at.as_secs_f64());
        let label = match e.action {
            ChaosAction::Hibernate => {
                let until = x((e.at + e.silent_for).as_secs_f64());
                let _ = write!(
                    o,
                    r##"<rect x="{xx:.1}" y="{TOP}" width="{:.1}" height="{}" fill="#eef3fb"/>"##,
                    until - xx,
                    H - TOP - BOTTOM
                );
                "silent (hibernate)".to_string()
            }
            action => format!("{action:?} runner {}", e.runner),
        };
        let _ = write!(
            o,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{}" stroke="#c00" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="#c00">{label}</text>"##,
            H - BOTTOM,
            xx + 3.0,
            TOP + 28.0,
        );
    }
    let series: [Series; 4] = [
        ("p50", "#1f77b4", |p| p.p50),
        ("p90", "#2ca02c", |p| p.p90),
        ("p99", "#ff7f0e", |p| p.p99),
        ("max", "#d62728", |p| p.max),
    ];
    for (i, (name, color, value)) in series.iter().enumerate() {
        // A second without round trips (a silence) breaks the line.
        let mut segments: Vec<Vec<String>> = Vec::new();
        let mut previous: Option<usize> = None;
        for p in points {
            if previous.is_none_or(|s| p.second > s + 1) {
                segments.push(Vec::new());
            }
            previous = Some(p.second);
            if let Some(segment) = segments.last_mut() {
                segment.push(format!(
                    "{:.1},{:.1}",
                    x(p.second as f64 + 0.5),
                    y(value(p))
                ));
            }
        }
        for segment in segments {
            let _ = write!(
                o,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                segment.join(" ")
            );
        }
        let lx = LEFT + 10.0 + i as f64 * 70.0;
        let _ = write!(
            o,
            r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            lx + 18.0,
            H - 12.0,
            H - 12.0,
            lx + 22.0,
            H - 8.0
        );
    }
    o.push_str("</svg>\n");
    o
}

fn label(us: u64) -> String {
    match us {
        u if u >= 1_000_000 => format!("{} s", u / 1_000_000),
        u if u >= 1_000 => format!("{} ms", u / 1_000),
        u => format!("{u} µs"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
