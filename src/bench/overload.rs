//! `hotchan bench --overload` (API.md promise 9): goodput and latency of latest pages in
//! `full` mode against offered load, from the concurrency the instance saturates at
//! (`--concurrency`, 1×) to 60× that many wrk connections, with admission control at its
//! defaults and with it out of the way (a limit no load reaches), side by side. While
//! wrk runs, the Redis breaker is sampled every 50 ms: load alone must never open it.
//! Writes `overload.md` and `overload.svg`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::contender::contender_settings;
use super::dataset::Dataset;
use super::workload::{self, Mix};
use super::{svg, wrk, BenchSettings};
use crate::app::Application;
use crate::cache::CacheMode;

/// Offered load, as multiples of `--concurrency` wrk connections.
const LOADS: [usize; 6] = [1, 2, 5, 10, 30, 60];

/// One wrk run at one load.
struct Step {
    load: usize,
    connections: usize,
    run: wrk::WrkRun,
    /// Samples (every 50 ms) that found the Redis breaker open.
    breaker_open: u64,
}

impl Step {
    /// 2xx answers per second.
    fn goodput(&self) -> f64 {
        self.run.requests.saturating_sub(self.run.errors) as f64 / self.run.seconds
    }
}

/// Runs every load against one instance built with `admission` on or out of the way.
async fn series(
    b: &BenchSettings,
    data: &Dataset,
    admission: bool,
    run_id: &str,
) -> anyhow::Result<Vec<Step>> {
    let mut settings = contender_settings(&b.serve, CacheMode::Full, run_id);
    if !admission {
        settings.max_in_flight = 100_000;
        settings.max_queued = 0;
    }
    let app = Application::build(settings).await?;
    let service = app.service();
    let base = match app.local_addr() {
        crate::config::ListenAddr::Tcp(addr) => format!("http://{addr}"),
        crate::config::ListenAddr::Unix(_) => unreachable!("the bench listens on TCP"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let ops = workload::generate(data, b.zipf, Mix::LATEST_ONLY, b.requests, b.seed);
    let seconds = Duration::from_secs(b.wrk_seconds.max(1));
    // Warm L1 and Redis at 1× first; not reported.
    wrk::run(
        &base,
        wrk::Requests::Ops(&ops),
        b.concurrency,
        seconds,
        1,
        None,
        &b.out_dir,
    )
    .await?;
    let mut steps = Vec::new();
    for (i, load) in LOADS.into_iter().enumerate() {
        let connections = b.concurrency * load;
        let open = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (open, service) = (open.clone(), service.clone());
            tokio::spawn(async move {
                loop {
                    if service.cache().breakers().any_open() {
                        open.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let salt = 100 + i as u64;
        let run = wrk::run(
            &base,
            wrk::Requests::Ops(&ops),
            connections,
            seconds,
            salt,
            None,
            &b.out_dir,
        )
        .await;
        sampler.abort();
        let run = run?;
        eprintln!(
            "  admission {}: {load:>2}× ({connections} connections): {:.0} req/s, {} not 2xx, p99 {:.2} ms",
            if admission { "on " } else { "off" },
            run.throughput(),
            run.errors,
            run.p99_ms
        );
        steps.push(Step {
            load,
            connections,
            run,
            breaker_open: open.load(Ordering::Relaxed),
        });
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(steps)
}

/// The overload profile: both series, the report and the plot.
pub async fn run(b: &BenchSettings, data: &Dataset, run_id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        wrk::installed(),
        "--overload needs wrk (scripts/bench installs it)"
    );
    let on = series(b, data, true, &format!("{run_id}.on")).await?;
    let off = series(b, data, false, &format!("{run_id}.off")).await?;
    let peak = on.iter().chain(&off).map(Step::goodput).fold(0.0, f64::max);
    let mut report = format!(
        "# hotchan bench --overload\n\n{} channels × {} messages; latest pages of {}, Zipf {}; `full` mode; wrk with 2 threads for {} s per step; 1× = {} connections.\n\n\
         Goodput is 2xx answers per second; \"not 2xx\" are 503 `overloaded` answers (and any other error wrk counts); p99 is wrk's, over every answer, refusals included. \"breaker\" counts 50 ms samples that found the Redis breaker open.\n\n\
         | admission | load | connections | goodput req/s | goodput / peak | not 2xx | p50 ms | p99 ms | p99.9 ms | breaker |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        b.channels, b.messages, workload::PAGE_LIMIT, b.zipf, b.wrk_seconds.max(1), b.concurrency
    );
    for (name, steps) in [("on (defaults)", &on), ("off", &off)] {
        for s in steps.iter() {
            let _ = writeln!(
                report,
                "| {name} | {}× | {} | {:.0} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {} |",
                s.load,
                s.connections,
                s.goodput(),
                s.goodput() / peak,
                s.run.errors,
                s.run.p50_ms,
                s.run.p99_ms,
                s.run.p999_ms,
                s.breaker_open
            );
        }
    }
    let p99_at_1 = on.first().map_or(f64::NAN, |s| s.run.p99_ms);
    if let Some(ten) = on.iter().find(|s| s.load == 10) {
        let _ = writeln!(
            report,
            "\nWith admission on, at 10×: goodput {:.2}× the peak, p99 {:.1}× the p99 at 1× ({:.2} ms against {:.2} ms).",
            ten.goodput() / peak,
            ten.run.p99_ms / p99_at_1,
            ten.run.p99_ms,
            p99_at_1
        );
    }
    let share = |steps: &[Step]| -> Vec<(f64, f64)> {
        steps
            .iter()
            .map(|s| (s.load as f64, s.goodput() / peak))
            .collect()
    };
    let series = [
        svg::Series {
            name: "admission on",
            colour: "#1f6feb",
            dashed: false,
            points: share(&on),
        },
        svg::Series {
            name: "admission off",
            colour: "#888888",
            dashed: true,
            points: share(&off),
        },
    ];
    std::fs::write(
        b.out_dir.join("overload.svg"),
        svg::chart(
            "Goodput / peak goodput, latest pages, full",
            "offered load, × the saturating concurrency (log scale)",
            &series,
        ),
    )?;
    std::fs::write(b.out_dir.join("overload.md"), &report)?;
    println!("{report}");
    Ok(())
}
