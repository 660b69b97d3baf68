//! `GET /admin`: a status page in plain HTML and inline SVG, drawn on the server (no
//! script, no build step), that reloads itself every 5 seconds. It shows the tiers and
//! their hit ratios, the breaker and dirty channels, the auditor's nines, the sizing
//! advice as a curve, and the hottest sampled channels. Behind the token when one is
//! set: the `Authorization: Bearer` header, or `?token=` for a browser (which then sits
//! in the address bar and in the reload; use it on a trusted network).

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, ErrorBody};
use super::extract::{bearer, token_allows};
use super::AppState;
use crate::cache::advice::Advice;
use crate::cache::audit::AuditReport;
use crate::cache::stats::ratio;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// The token, for a browser that cannot send the header.
    token: Option<String>,
}

/// The status page.
#[utoipa::path(get, path = "/admin", tag = "operations",
    params(PageQuery),
    responses(
        (status = 200, description = "The status page (HTML, reloads every 5 s)", body = String, content_type = "text/html"),
        (status = 401, description = "A token is set and the request did not present it", body = ErrorBody),
    ))]
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let presented = query.token.as_deref().unwrap_or(bearer(&headers));
    if !token_allows(&state, presented) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is required: the Authorization header, or ?token=",
        ));
    }
    let cache = state.service.cache();
    let now = cache.snapshot();
    let stats = now.stats;
    let (windows, window_bytes) = cache.l1().window_usage();
    let figures = Figures {
        mode: now.mode.as_str(),
        l1_hit_ratio: ratio(stats.l1_hits, stats.l1_misses),
        l1_hits: stats.l1_hits,
        l1_misses: stats.l1_misses,
        l1_entries: now.l1.entries,
        l1_bytes: now.l1.weighted_bytes,
        l1_capacity: now.l1.capacity_bytes,
        redis_hit_ratio: ratio(stats.l2_hits, stats.l2_misses + stats.redis_skipped),
        redis_hits: stats.l2_hits,
        redis_misses: stats.l2_misses + stats.redis_skipped,
        postgres_reads: stats.postgres_reads,
        breaker_open: now.breaker_open,
        breaker_reason: now.breaker_reason,
        dirty: now.dirty,
        audit: now.audit,
        advice: cache
            .advice()
            .advice(cache.l1_budget(), windows, window_bytes, cache.hot_window()),
        hottest: cache.advice().hottest(10),
    };
    let html = render(&figures);
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

struct Figures {
    mode: &'static str,
    l1_hit_ratio: Option<f64>,
    l1_hits: u64,
    l1_misses: u64,
    l1_entries: u64,
    l1_bytes: u64,
    l1_capacity: u64,
    redis_hit_ratio: Option<f64>,
    redis_hits: u64,
    redis_misses: u64,
    postgres_reads: u64,
    breaker_open: bool,
    breaker_reason: Option<String>,
    dirty: usize,
    audit: AuditReport,
    advice: Advice,
    hottest: Vec<(crate::domain::ChannelId, u64)>,
}

fn percent(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

/// Text for HTML: `&`, `<`, `>` and `"` escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:60em}\
h1{font-size:1.6em;margin:0}h2{font-size:1.15em;margin:1.6em 0 .4em}\
table{border-collapse:collapse}td,th{padding:.2em .9em .2em 0;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#17733a}.bad{color:#b3261e}\
.muted{color:#777}svg text{font:12px system-ui,sans-serif}";

fn render(f: &Figures) -> String {
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=refresh content=5><title>hotchan status</title>\
         <style>{STYLE}</style></head><body><h1>hotchan</h1>\
         <p class=muted>cache mode <b id=mode>{}</b> · this page reloads every 5 s · \
         figures since this instance started</p>",
        f.mode
    );
    tiers(&mut h, f);
    redis(&mut h, f);
    audit(&mut h, &f.audit);
    advice(&mut h, &f.advice);
    hottest(&mut h, f);
    h.push_str("</body></html>");
    h
}

fn tiers(h: &mut String, f: &Figures) {
    let _ = write!(
        h,
        "<h2>Tiers</h2><table><tr><th>tier<th>hit ratio<th>hits<th>misses<th>held</tr>\
         <tr><td>L1 (in process)<td class=n id=l1-hit-ratio>{}<td class=n>{}<td class=n>{}\
         <td class=n>{} entries, {} of {} KiB</tr>\
         <tr><td>Redis<td class=n id=redis-hit-ratio>{}<td class=n>{}<td class=n>{}<td></tr>\
         <tr><td>Postgres reads<td><td class=n id=postgres-reads>{}<td><td></tr></table>",
        percent(f.l1_hit_ratio),
        f.l1_hits,
        f.l1_misses,
        f.l1_entries,
        f.l1_bytes / 1024,
        f.l1_capacity / 1024,
        percent(f.redis_hit_ratio),
        f.redis_hits,
        f.redis_misses,
        f.postgres_reads,
    );
    // The two hit ratios as bars.
    h.push_str("<svg id='tier-bars' width='420' height='64' role='img' aria-label='hit ratios'>");
    for (row, (name, r)) in [("L1", f.l1_hit_ratio), ("Redis", f.redis_hit_ratio)]
        .iter()
        .enumerate()
    {
        let y = 6 + row * 28;
        let width = (r.unwrap_or(0.0) * 300.0).round();
        let _ = write!(
            h,
            "<text x='0' y='{}'>{name}</text>\
             <rect x='60' y='{y}' width='300' height='18' fill='#eee'/>\
             <rect x='60' y='{y}' width='{width}' height='18' fill='#3b7dd8'/>\
             <text x='366' y='{}'>{}</text>",
            y + 14,
            y + 14,
            percent(*r)
        );
    }
    h.push_str("</svg>");
}

fn redis(h: &mut String, f: &Figures) {
    let (class, state) = if f.breaker_open {
        ("bad", "open: reads and writes go to Postgres alone")
    } else {
        ("ok", "closed")
    };
    let reason = f
        .breaker_reason
        .as_deref()
        .map(|r| format!(" ({})", escape(r)))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<h2>Redis</h2><p>breaker <b id=breaker class={class}>{state}</b>{reason} · \
         dirty channels <b id=dirty-channels>{}</b></p>",
        f.dirty
    );
}

fn audit(h: &mut String, a: &AuditReport) {
    let _ = write!(
        h,
        "<h2>Consistency audit</h2><p class=muted>{} % of channel writes sampled; {} sampled, \
         {} checks pending</p><table><tr><th>after<th>checks<th>consistent<th>nines<th>skipped</tr>",
        a.sample_percent, a.sampled_writes, a.pending_checks
    );
    for d in &a.delays {
        let nines = match d.nines {
            Some(n) if d.nines_at_least => format!("≥ {n:.1}"),
            Some(n) => format!("{n:.2}"),
            None => "–".to_owned(),
        };
        let _ = write!(
            h,
            "<tr><td>{}<td class=n>{}<td class=n>{}<td class=n id=nines-{}>{nines}<td class=n>{}</tr>",
            d.delay,
            d.checks,
            percent(d.consistent_ratio),
            d.delay,
            d.skipped
        );
    }
    h.push_str("</table>");
    if let Some(last) = &a.last_inconsistency {
        let _ = write!(
            h,
            "<p class=bad>last mismatch: channel {} after {} at {}: {}</p>",
            last.channel,
            last.delay,
            escape(&last.found_at),
            escape(&last.differences.join("; "))
        );
    }
}

fn advice(h: &mut String, a: &Advice) {
    let _ = write!(
        h,
        "<h2>Sizing advice</h2><p id=recommendation>{}</p>",
        escape(&a.recommendation)
    );
    // The predicted L1 hit ratio against L1's size, ¼× to 4× on a log scale.
    let (w, ht, left, bottom) = (420.0, 180.0, 44.0, 24.0);
    let x = |factor: f64| left + (factor.log2() + 2.0) / 4.0 * (w - left - 20.0);
    let y = |r: f64| 8.0 + (1.0 - r) * (ht - bottom - 8.0);
    let _ = write!(
        h,
        "<svg id='advice-curve' width='{w}' height='{ht}' role='img' \
         aria-label='predicted hit ratio by L1 size'>\
         <line x1='{left}' y1='{}' x2='{}' y2='{}' stroke='#999'/>\
         <line x1='{left}' y1='8' x2='{left}' y2='{}' stroke='#999'/>\
         <text x='0' y='14'>100 %</text><text x='8' y='{}'>0 %</text>",
        y(0.0),
        w - 20.0,
        y(0.0),
        y(0.0),
        y(0.0)
    );
    let points: Vec<(f64, f64)> =
        a.l1.iter()
            .filter_map(|p| p.predicted_hit_ratio.map(|r| (x(p.factor), y(r))))
            .collect();
    for p in &a.l1 {
        let label = match p.factor {
            f if f < 0.3 => "¼×".to_owned(),
            f if f < 0.6 => "½×".to_owned(),
            f => format!("{f}×"),
        };
        let _ = write!(
            h,
            "<text x='{}' y='{}' text-anchor='middle'>{label}</text>",
            x(p.factor),
            ht - 6.0
        );
    }
    if !points.is_empty() {
        let line: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect();
        let _ = write!(
            h,
            "<polyline points='{}' fill='none' stroke='#3b7dd8' stroke-width='2'/>",
            line.join(" ")
        );
        for (px, py) in &points {
            let _ = write!(
                h,
                "<circle cx='{px:.1}' cy='{py:.1}' r='3' fill='#3b7dd8'/>"
            );
        }
    }
    h.push_str("</svg><table><tr><th>L1 size<th>windows<th>predicted hits</tr>");
    for p in &a.l1 {
        let _ = write!(
            h,
            "<tr><td>{}× ({} KiB)<td class=n>{}<td class=n id=advice-{}>{}</tr>",
            p.factor,
            p.capacity_bytes / 1024,
            p.channels,
            p.factor,
            percent(p.predicted_hit_ratio)
        );
    }
    h.push_str("</table><table><tr><th>hot window<th>windows in L1<th>predicted hits</tr>");
    for p in &a.windows {
        let _ = write!(
            h,
            "<tr><td>{} messages<td class=n>{}<td class=n>{}</tr>",
            p.window,
            p.channels,
            percent(p.predicted_hit_ratio)
        );
    }
    let _ = write!(
        h,
        "</table><p class=muted>sampling rate {:.3}, {} channels tracked, {} reads seen</p>",
        a.sampling_rate, a.tracked_channels, a.reads_seen
    );
}

fn hottest(h: &mut String, f: &Figures) {
    h.push_str(
        "<h2>Hottest channels</h2><table id=hottest><tr><th>channel<th>reads (sampled)</tr>",
    );
    for (channel, reads) in &f.hottest {
        let _ = write!(h, "<tr><td><code>{channel}</code><td class=n>{reads}</tr>");
    }
    h.push_str("</table>");
}
