//! wrk (Debian's `wrk`; `scripts/bench` installs it) as a second HTTP load driver, run
//! beside the bench's own: a C program with pre-built requests and keep-alive, so it
//! shows whether the bench's own client, not the server, set the HTTP figures.
//!
//! The workload's requests are written into a Lua script that wrk's threads cycle
//! through (wrk runs for a duration, not a count); posts get a fresh `client_msg_id`
//! each time. The script's `done` prints one line of figures that [`run`] parses.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::driver::http_form;
use super::workload::Op;

/// Threads of wrk: one per core of this kind of machine.
const THREADS: usize = 2;
/// The end of every script: one line of figures for [`run`].
const DONE: &str = r#"function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("HOTCHAN_WRK %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;
/// The token a post's `client_msg_id` is built from; replaced per request in Lua.
const ID_TOKEN: &str = "@ID@";

/// What one wrk run measured.
#[derive(Debug, Clone)]
pub struct WrkRun {
    pub requests: u64,
    /// Connection errors, timeouts and answers other than 2xx/3xx.
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl WrkRun {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// `req/s | p50 ms | p99 ms | p99.9 ms | errors`, as report table cells.
    pub fn cells(&self) -> String {
        format!(
            "{:.0} | {:.2} | {:.2} | {:.2} | {}",
            self.throughput(),
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors
        )
    }
}

/// Whether `wrk` can be run here.
pub fn installed() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// A Lua long string that cannot end early, whatever `s` holds.
fn lua_string(s: &str) -> String {
    let mut level = String::new();
    while s.contains(&format!("]{level}]")) {
        level.push('=');
    }
    format!("[{level}[{s}]{level}]")
}

/// What wrk sends: the workload's requests in turn, or (the ceiling) as many GETs of
/// one path, through the same script, so that wrk does the same work per request for
/// every contender.
pub enum Requests<'a> {
    Ops(&'a [Op]),
    Get { path: &'a str, count: usize },
}

/// The script that makes wrk send `requests` in turn (each thread from its own offset).
fn script(requests: &Requests<'_>, salt: u64, token: Option<&str>) -> String {
    let forms: Vec<(&str, String, Option<String>)> = match requests {
        Requests::Ops(ops) => ops.iter().map(|op| http_form(op, ID_TOKEN)).collect(),
        Requests::Get { path, count } => (0..*count)
            .map(|_| ("GET", (*path).to_owned(), None))
            .collect(),
    };
    let mut lua = String::from("local requests = {\n");
    for (method, path, body) in forms {
        let body = body.map_or("nil".to_owned(), |b| lua_string(&b));
        let _ = writeln!(lua, "  {{\"{method}\", {}, {body}}},", lua_string(&path));
    }
    lua.push_str("}\nlocal headers = {[\"Content-Type\"] = \"application/json\"}\n");
    if let Some(token) = token {
        let _ = writeln!(
            lua,
            "headers[\"Authorization\"] = {}",
            lua_string(&format!("Bearer {token}"))
        );
    }
    let _ = write!(
        lua,
        r#"local salt = "{salt}"
local prebuilt, index, counter, thread_id, next_id = {{}}, 0, 0, 0, 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function init(args)
  thread_id = tid or 0
  for i, r in ipairs(requests) do
    if r[3] == nil or not string.find(r[3], "{ID_TOKEN}", 1, true) then
      prebuilt[i] = wrk.format(r[1], r[2], headers, r[3])
    end
  end
  index = (thread_id * 7919) % #requests
end
function request()
  index = index % #requests + 1
  local ready = prebuilt[index]
  if ready then return ready end
  counter = counter + 1
  local r = requests[index]
  local body = (string.gsub(r[3], "{ID_TOKEN}", "w" .. salt .. "-" .. thread_id .. "-" .. counter))
  return wrk.format(r[1], r[2], headers, body)
end
"#
    );
    lua.push_str(DONE);
    lua
}

/// Runs wrk against `base` for `duration` with `connections`, sending `requests` in
/// turn. The script goes into `dir`.
pub async fn run(
    base: &str,
    requests: Requests<'_>,
    connections: usize,
    duration: Duration,
    salt: u64,
    token: Option<&str>,
    dir: &Path,
) -> anyhow::Result<WrkRun> {
    let path = dir.join(format!("wrk-{salt}.lua"));
    let lua = script(&requests, salt, token);
    std::fs::write(&path, lua).with_context(|| format!("writing {}", path.display()))?;
    let mut command = std::process::Command::new("wrk");
    command
        .args([
            "-t",
            &THREADS.min(connections).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{}s", duration.as_secs().max(1)),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&path)
        .arg(base);
    // wrk runs for seconds: off the runtime's workers, which serve the contender.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("HOTCHAN_WRK "))
        .with_context(|| {
            format!(
                "wrk printed no figures: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().context("a wrk figure"))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(n.len() == 6, "wrk printed {line}");
    let _ = std::fs::remove_file(&path);
    Ok(WrkRun {
        requests: n[0],
        seconds: n[1] as f64 / 1e6,
        errors: n[2],
        p50_ms: n[3] as f64 / 1000.0,
        p99_ms: n[4] as f64 / 1000.0,
        p999_ms: n[5] as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lua_long_string_survives_its_own_closing_brackets() {
        assert_eq!(lua_string("a"), "[[a]]");
        assert_eq!(lua_string("x]]y"), "[=[x]]y]=]");
        assert_eq!(lua_string("x]]y]=]"), "[==[x]]y]=]]==]");
    }
}
