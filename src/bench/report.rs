//! The load benchmark's report: a table per scenario (the bench's driver, then wrk), the
//! reads by path, and the hit-rate study with its plot.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::contender::Contender;
use super::{hitrate, svg, BenchSettings};
use crate::cache::paths::Path;
use crate::cache::stats::ratio;

fn percent(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{:.1}%", r * 100.0))
}

pub fn write_scenario(report: &mut String, scenario: &str, contenders: &[Contender]) {
    let _ = writeln!(report, "## Scenario: {scenario}\n");
    let _ = writeln!(report, "| contender | req/s | p50 ms | p99 ms | p99.9 ms | errors | L1 hit | Redis hit | Postgres reads per read |");
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in contenders {
        let s = &c.stats;
        let pg = if c.name == "ceiling" {
            "–".into()
        } else {
            format!("{:.3}", s.postgres_reads as f64 / c.reads.max(1) as f64)
        };
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {} |",
            c.name,
            c.run.cells(),
            percent(ratio(s.l1_hits, s.l1_misses)),
            percent(ratio(s.l2_hits, s.l2_misses + s.redis_skipped)),
            pg
        );
    }
    let figures = contenders
        .iter()
        .map(|c| (c.name.as_str(), c.run.throughput(), c.run.ms(0.99)));
    write_ratios(report, "Throughput", figures);
    write_wrk(report, contenders);
    write_transactions(report, contenders);
    write_paths(report, contenders);
    write_rss(report, contenders);
}

/// Postgres's work per read as Postgres counts it (`pg_stat_database`), over each
/// contender's whole run.
fn write_transactions(report: &mut String, contenders: &[Contender]) {
    let cells: Vec<String> = contenders
        .iter()
        .filter_map(|c| {
            let (transactions, reads) = c.postgres?;
            Some(format!(
                "{} {:.4} ({transactions} for {reads})",
                c.name,
                c.transactions_per_read()?
            ))
        })
        .collect();
    let replicated: Vec<String> = contenders
        .iter()
        .filter_map(|c| {
            let r = c.replicas?;
            let (_, reads) = c.postgres?;
            let per = |n: f64| n / reads.max(1) as f64;
            Some(format!(
                "{} primary {:.4}, replicas {:.4} (replica transactions {:.4})",
                c.name,
                per(r.primary_reads as f64),
                per(r.replica_reads as f64),
                per(r.replica_transactions as f64)
            ))
        })
        .collect();
    if !replicated.is_empty() {
        let _ = writeln!(
            report,
            "With read replicas, Postgres reads per read by the node that answered them (the instance's count; the primary's transactions above include the writes and their WAL positions): {}.\n",
            replicated.join("; ")
        );
    }
    if !cells.is_empty() {
        let _ = writeln!(
            report,
            "Postgres transactions per read, as `pg_stat_database` counts them in the bench database over each contender's whole run (warm-up, measured run, wrk run, fills and background work; reads of the driver and of wrk): {}.\n",
            cells.join("; ")
        );
    }
    let calls: Vec<String> = contenders
        .iter()
        .filter(|c| !c.postgres_calls.is_empty())
        .map(|c| {
            let each: Vec<String> = c
                .postgres_calls
                .iter()
                .map(|(operation, count)| format!("{operation} {count}"))
                .collect();
            format!("{}: {}", c.name, each.join(", "))
        })
        .collect();
    if !calls.is_empty() {
        let _ = writeln!(
            report,
            "Where they come from, as each instance's `/metrics` counts its Postgres calls by operation over the same run: {}.\n",
            calls.join("; ")
        );
    }
}

/// Resident size per contender: hotchan runs inside the bench process, so the start
/// includes the bench's own data; the growth is the contender's.
fn write_rss(report: &mut String, contenders: &[Contender]) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let cells: Vec<String> = contenders
        .iter()
        .filter_map(|c| {
            let (start, peak) = c.rss?;
            Some(format!(
                "{} {:.0} → peak {:.0} MiB (+{:.0})",
                c.name,
                mib(start),
                mib(peak),
                mib(peak.saturating_sub(start))
            ))
        })
        .collect();
    if !cells.is_empty() {
        let _ = writeln!(
            report,
            "Resident size of the bench process (hotchan inside it), at each contender's start and its peak: {}.\n",
            cells.join("; ")
        );
    }
}

/// The line of ratios between contenders, from (name, req/s, p99) of each.
fn write_ratios<'a>(
    report: &mut String,
    lead: &str,
    figures: impl Iterator<Item = (&'a str, f64, f64)>,
) {
    let by: HashMap<&str, (f64, f64)> = figures.map(|(n, r, p)| (n, (r, p))).collect();
    let rate = |a: &str, b: &str| Some(by.get(a)?.0 / by.get(b)?.0);
    let p99 = |a: &str, b: &str| Some(by.get(a)?.1 / by.get(b)?.1);
    let fmt = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.2}×"));
    let _ = writeln!(
        report,
        "\n{lead} full/off {}, redis/off {}, full/ceiling {}; p99 full/off {}.\n",
        fmt(rate("full", "off")),
        fmt(rate("redis", "off")),
        fmt(rate("full", "ceiling")),
        fmt(p99("full", "off"))
    );
}

/// The same contenders driven by wrk, and whether the bench's own driver kept up.
fn write_wrk(report: &mut String, contenders: &[Contender]) {
    if contenders.iter().all(|c| c.wrk.is_none()) {
        if contenders.iter().any(|c| c.name == "ceiling") {
            let _ = writeln!(report, "wrk did not run (not installed, or `--wrk-seconds 0`): the figures above are the bench's own driver only.\n");
        }
        return;
    }
    let _ = writeln!(report, "The same contenders driven by wrk (2 threads, the same connections, cycling through the same measured requests for a fixed time):\n");
    let _ = writeln!(
        report,
        "| contender | req/s | p50 ms | p99 ms | p99.9 ms | errors |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|");
    for c in contenders {
        if let Some(w) = &c.wrk {
            let _ = writeln!(report, "| {} | {} |", c.name, w.cells());
        }
    }
    let figures = contenders.iter().filter_map(|c| {
        let w = c.wrk.as_ref()?;
        Some((c.name.as_str(), w.throughput(), w.p99_ms))
    });
    write_ratios(report, "Over wrk: throughput", figures);
    if let Some(ceiling) = contenders.iter().find(|c| c.name == "ceiling") {
        if let Some(w) = &ceiling.wrk {
            let share = ceiling.run.throughput() / w.throughput();
            let verdict = if share >= 0.8 {
                "it is not the bottleneck"
            } else {
                "**the bench's own HTTP figures are client-bound: read the wrk table**"
            };
            let _ = writeln!(
                report,
                "Against the ceiling the bench's own driver reached {:.0}% of wrk's req/s ({:.0} against {:.0}): {verdict}.\n",
                share * 100.0,
                ceiling.run.throughput(),
                w.throughput()
            );
        }
    }
}

/// Per contender, the reads each path answered and their latency, measured inside it.
fn write_paths(report: &mut String, contenders: &[Contender]) {
    let _ = writeln!(report, "Reads by the path that answered them (timed inside hotchan, from the service call to its answer):\n");
    let _ = writeln!(
        report,
        "| contender | path | reads | share | p50 ms | p99 ms | p99.9 ms |"
    );
    let _ = writeln!(report, "|---|---|---:|---:|---:|---:|---:|");
    for c in contenders.iter().filter(|c| c.name != "ceiling") {
        let total: u64 = Path::ALL.iter().map(|&p| c.latency.count(p)).sum();
        for path in Path::ALL {
            let n = c.latency.count(path);
            if n == 0 {
                continue;
            }
            let q = |x| {
                c.latency
                    .quantile_ms(path, x)
                    .map_or("–".into(), |v| format!("{v:.3}"))
            };
            let _ = writeln!(
                report,
                "| {} | {} | {n} | {:.1}% | {} | {} | {} |",
                c.name,
                path.as_str(),
                n as f64 * 100.0 / total.max(1) as f64,
                q(0.5),
                q(0.99),
                q(0.999)
            );
        }
    }
    let _ = writeln!(report);
}

pub fn write_l1_table(report: &mut String, points: &[hitrate::Point]) {
    let _ = writeln!(
        report,
        "| L1 size (% of channels) | entries | moka hit ratio | Belady (optimum) | gap (points) |"
    );
    let _ = writeln!(report, "|---:|---:|---:|---:|---:|");
    for p in points {
        let _ = writeln!(
            report,
            "| {:.1}% | {} | {:.1}% | {:.1}% | {:.1} |",
            p.fraction * 100.0,
            p.entries,
            p.moka * 100.0,
            p.belady * 100.0,
            (p.belady - p.moka) * 100.0
        );
    }
}

pub fn write_study(
    report: &mut String,
    b: &BenchSettings,
    points: &[hitrate::Point],
    coverage: &[f64],
    reads: usize,
) {
    let _ = writeln!(
        report,
        "## Hit-rate study\n\nA trace of {reads} reads of the mixed workload (Zipf {}, {} channels), through moka (the L1) and through the clairvoyant optimum (Belady) at each size. Plot: `hitrate.svg`.\n",
        b.zipf, b.channels
    );
    write_l1_table(report, points);
    let _ = writeln!(report, "\nReads answered by both L1 and a hot window of each size (and by the window alone, first row):\n");
    let header: Vec<String> = hitrate::WINDOWS
        .iter()
        .map(|w| format!("window {w}"))
        .collect();
    let _ = writeln!(report, "| L1 size | {} |", header.join(" | "));
    let _ = writeln!(report, "|---:|{}", "---:|".repeat(hitrate::WINDOWS.len()));
    let row: Vec<String> = coverage
        .iter()
        .map(|c| format!("{:.1}%", c * 100.0))
        .collect();
    let _ = writeln!(report, "| window only | {} |", row.join(" | "));
    for p in points {
        let row: Vec<String> = p
            .combined
            .iter()
            .map(|c| format!("{:.1}%", c * 100.0))
            .collect();
        let _ = writeln!(
            report,
            "| {:.1}% | {} |",
            p.fraction * 100.0,
            row.join(" | ")
        );
    }
}

pub fn write_plot(b: &BenchSettings, points: &[hitrate::Point]) -> anyhow::Result<()> {
    let series = [
        svg::Series {
            name: "Belady (optimum)",
            colour: "#888888",
            dashed: true,
            points: points
                .iter()
                .map(|p| (p.fraction * 100.0, p.belady))
                .collect(),
        },
        svg::Series {
            name: "moka (L1)",
            colour: "#1f6feb",
            dashed: false,
            points: points
                .iter()
                .map(|p| (p.fraction * 100.0, p.moka))
                .collect(),
        },
    ];
    let title = format!("L1 hit ratio, Zipf {}, {} channels", b.zipf, b.channels);
    std::fs::write(
        b.out_dir.join("hitrate.svg"),
        svg::chart(&title, "L1 size, % of channels (log scale)", &series),
    )?;
    let mut csv = String::from("l1_percent_of_channels,entries,moka,belady\n");
    for p in points {
        let _ = writeln!(
            csv,
            "{},{},{:.4},{:.4}",
            p.fraction * 100.0,
            p.entries,
            p.moka,
            p.belady
        );
    }
    std::fs::write(b.out_dir.join("hitrate.csv"), csv)?;
    Ok(())
}
