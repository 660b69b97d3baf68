//! `GET /admin`, the status page: behind the token, and rendered by a real browser
//! (headless Chromium, Debian's `chromium`) with the figures the JSON endpoints give.
//! `scripts/test` installs Chromium and sets `HOTCHAN_TEST_REQUIRE_CHROMIUM=1`; a plain
//! `cargo test` without it says "skipped".

use std::process::Command;

use hotchan::config::Secret;

use crate::helpers::{spawn_app_with, users};

/// The page as Chromium renders it (`--dump-dom`), or `None` without Chromium.
fn chromium_dom(url: &str) -> Option<String> {
    let binary = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(binary) = binary else {
        assert!(
            std::env::var("HOTCHAN_TEST_REQUIRE_CHROMIUM").is_err(),
            "HOTCHAN_TEST_REQUIRE_CHROMIUM is set and no chromium is installed"
        );
        eprintln!("skipped: no chromium on this machine");
        return None;
    };
    let profile = std::env::temp_dir().join(format!(
        "hotchan-chromium-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let out = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--timeout=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The text of the element with `id` in `html` (the page's figures sit in such cells).
fn cell<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in {html}"));
    let text = &html[start..];
    let open = text.find('>').unwrap() + 1;
    let close = text[open..].find('<').unwrap();
    &text[open..open + close]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_needs_the_token_and_shows_the_figures_in_a_browser() {
    let app = spawn_app_with(|s| s.token = Some(Secret("page-token".into()))).await;
    let [a] = users();
    let cid = app.group(&[a]).await;
    app.say(cid, a, "hello").await;
    for _ in 0..30 {
        app.get(&format!("/v1/channels/{cid}/messages"))
            .await
            .expect(200);
    }

    // Without the token: 401, with the error body.
    let plain = reqwest::get(format!("{}/admin", app.base)).await.unwrap();
    assert_eq!(plain.status(), 401);
    let wrong = reqwest::get(format!("{}/admin?token=nope", app.base))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let url = format!("{}/admin?token=page-token", app.base);
    let served = reqwest::get(&url).await.unwrap();
    assert_eq!(served.status(), 200);
    assert!(served.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    let stats = app.get("/v1/admin/cache").await.expect(200);
    let dom = tokio::task::spawn_blocking(move || chromium_dom(&url))
        .await
        .unwrap();
    let Some(dom) = dom else { return };
    // The browser built the page: every section and both drawings are in its DOM.
    for section in [
        "Tiers",
        "Redis",
        "Consistency audit",
        "Sizing advice",
        "Hottest channels",
    ] {
        assert!(
            dom.contains(&format!("<h2>{section}</h2>")),
            "{section} missing: {dom}"
        );
    }
    assert!(dom.contains("<svg id=\"tier-bars\""), "{dom}");
    // Attributes parsed as meant (an unquoted `fill=#eee/>` would not be).
    assert!(dom.contains("fill=\"#3b7dd8\""), "{dom}");
    assert!(!dom.contains("fill=\"#eee/\""), "{dom}");
    assert_eq!(cell(&dom, "mode"), stats["mode"].as_str().unwrap());
    assert_eq!(cell(&dom, "breaker"), "closed");
    assert_eq!(cell(&dom, "dirty-channels"), "0");
    // Figures match the JSON view (the page was drawn after it: counts only grow).
    let postgres_reads: u64 = cell(&dom, "postgres-reads").parse().unwrap();
    assert!(postgres_reads >= stats["postgres_reads"].as_u64().unwrap());
    if stats["mode"] == "off" {
        // No cache, no advisor: the page says so instead of drawing a curve.
        assert!(
            cell(&dom, "recommendation").contains("advisor is off"),
            "{dom}"
        );
        assert!(!dom.contains("<polyline"), "{dom}");
    } else {
        assert!(dom.contains("<polyline"), "no advice curve: {dom}");
    }
    if stats["mode"] == "full" {
        let l1 = cell(&dom, "l1-hit-ratio");
        assert!(l1.ends_with(" %"), "{l1}");
        let ratio: f64 = l1.trim_end_matches(" %").parse().unwrap();
        let json = stats["l1"]["hit_ratio"].as_f64().unwrap() * 100.0;
        assert!(
            (ratio - json).abs() < 5.0,
            "page {ratio} against JSON {json}"
        );
        // The channel read 30 times leads the hottest channels.
        assert!(dom.contains(&cid.to_string()), "{dom}");
    }
    assert!(!cell(&dom, "recommendation").is_empty());
    assert!(dom.contains("id=\"nines-1s\""), "{dom}");
}
