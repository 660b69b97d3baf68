//! Wiring: builds the pool, the Redis client, the service and the router, binds the
//! listener (port 0 works, for tests), and runs until a shutdown signal.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

use crate::api;
use crate::cache::{CacheMode, Hooks, HotCache};
use crate::config::{DatabaseSettings, ListenAddr, Settings};
use crate::metrics::Metrics;
use crate::postgres::{self, Db, SyncLimits};
use crate::redis::Redis;
use crate::service::feeds::FeedConfig;
use crate::service::{Service, ServiceSettings};

/// A bound listener.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

/// A built, bound, not yet running hotchan instance.
pub struct Application {
    listener: Listener,
    router: api::Router,
    db: Db,
    redis: Redis,
    settings: Settings,
    /// The background tasks (the cache's invalidation listener, Redis prober and fills;
    /// the metrics' upkeep).
    tasks: Vec<tokio::task::JoinHandle<()>>,
    service: Arc<Service>,
    redis_settings: crate::redis::RedisSettings,
}

impl Application {
    /// Migrates (creating the database when missing), connects, and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_hooks(settings, Hooks::default()).await
    }

    /// [`Application::build`] with test hooks in the cache.
    pub async fn build_with_hooks(settings: Settings, hooks: Hooks) -> anyhow::Result<Application> {
        let retention = settings.feeds.retention().map_err(anyhow::Error::msg)?;
        postgres::ensure_database(&settings.db.pg())
            .await
            .context("cannot reach Postgres at --database-url (with its sslmode and sslrootcert) to check the database")?;
        postgres::migrate(&settings.db.pg())
            .await
            .context("migrating the database failed")?;
        let db = Db::connect(&settings.db.pg())
            .await
            .context("cannot open the Postgres pool")?
            // Without a cache in front, writes have nothing to invalidate.
            .with_outbox(settings.cache != CacheMode::Off);
        if let Some(point) = &settings.crash_at {
            let point = crate::crash::POINTS.iter().find(|p| **p == point.as_str());
            crate::crash::arm(point.expect("checked by the setting's parser"));
        }
        let identity = db
            .identity()
            .await
            .context("reading the database identity")?;
        let redis_settings = settings.redis_settings(identity);
        let redis = Redis::connect(redis_settings.clone()).await?;
        let metrics = Arc::new(Metrics::new());
        let hot = Arc::new(HotCache::new(
            settings.cache_settings(),
            db.clone(),
            redis.clone(),
            hooks,
            metrics.clone(),
        ));
        let cache = Arc::downgrade(&hot);
        db.on_failover(move || {
            if let Some(cache) = cache.upgrade() {
                cache.failed_over();
            }
        });
        let service = Service::new(
            db.clone(),
            hot.clone(),
            metrics.clone(),
            ServiceSettings {
                sync: SyncLimits {
                    reset_threshold: settings.sync_reset_threshold,
                    reset_messages: settings.sync_reset_messages,
                },
                feeds: FeedConfig {
                    retention,
                    max_data_bytes: settings.feeds.feed_max_data_bytes as usize,
                    fanout_batch: settings.feeds.feed_fanout_batch as usize,
                },
            },
        );
        let service = match &settings.trace_file {
            Some(path) => service.with_trace(
                crate::service::trace::Trace::open(path)
                    .await
                    .with_context(|| format!("--trace-file {}", path.display()))?,
            ),
            None => service,
        };
        let service = Arc::new(service);
        db.feed_upkeep(retention, true)
            .await
            .context("making the feed partitions")?;
        if settings.cache != CacheMode::Off {
            // Writes an instance (this one, say) cut short between commit and cache: dirty
            // here before the first request, dropped from Redis as soon as it answers.
            crate::cache::outbox::recover(hot.coherence())
                .await
                .context("reading the cache outbox")?;
        }
        let tasks = crate::tasks::start(&crate::tasks::Parts {
            cache: hot,
            service: service.clone(),
            metrics: metrics.clone(),
            db: db.clone(),
            retention,
        });
        let state = api::Parts {
            service: service.clone(),
            db: db.clone(),
            redis: redis.clone(),
            metrics,
            token: settings.token.clone(),
            max_content_bytes: settings.max_content_bytes as usize,
            admission: api::AdmissionSettings {
                max_in_flight: settings.max_in_flight as usize,
                max_queued: settings.max_queued as usize,
                wait: std::time::Duration::from_millis(settings.admission_wait_ms),
            },
        };
        let router = api::router(state, settings.max_body_bytes as usize);
        let listener = bind(&settings.listen).await?;
        Ok(Application {
            listener,
            router,
            db,
            redis,
            settings,
            tasks,
            service,
            redis_settings,
        })
    }

    /// The Redis settings in effect, with the prefix that includes the database identity.
    pub fn redis_settings(&self) -> crate::redis::RedisSettings {
        self.redis_settings.clone()
    }

    /// The service behind the router, for in-process callers (the benchmark).
    /// The Postgres store (the bench reads its replica counts).
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn service(&self) -> Arc<Service> {
        self.service.clone()
    }

    /// The router, for in-process callers (the router benchmark): requests through it
    /// reach the same service as the listener's.
    pub fn router(&self) -> api::Router {
        self.router.clone()
    }

    /// The bound address: with port 0 in the settings, the port the OS chose.
    pub fn local_addr(&self) -> ListenAddr {
        match &self.listener {
            Listener::Tcp(l) => ListenAddr::Tcp(l.local_addr().expect("a bound TCP socket")),
            Listener::Unix(_, path) => ListenAddr::Unix(path.clone()),
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, gives in-flight requests
    /// up to the shutdown timeout to finish, and closes the pools.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopping = async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        };
        info!(listen = %self.local_addr(), cache = self.settings.cache.as_str(), "serving");
        if self.settings.cache_gate {
            tracing::warn!(
                "--cache-gate (HOTCHAN_CACHE_GATE) is deprecated and has no effect: a read the \
                 cache can answer is always answered by it"
            );
        }
        let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
            match self.listener {
                Listener::Tcp(l) => Box::pin(api::serve(l, self.router, stopping)),
                Listener::Unix(l, _) => Box::pin(api::serve(l, self.router, stopping)),
            };
        let mut server = server;
        tokio::select! {
            result = &mut server => result.context("the HTTP server failed")?,
            () = shutdown => {
                info!("shutdown requested: no new connections, draining in-flight requests");
                let _ = stop_tx.send(true);
                let grace = self.settings.shutdown_timeout();
                match tokio::time::timeout(grace, server).await {
                    Ok(result) => result.context("the HTTP server failed")?,
                    Err(_) => warn!(timeout_ms = grace.as_millis() as u64, "in-flight requests outlived the shutdown timeout; closing anyway"),
                }
            }
        }
        close_parts(&self.tasks, &self.db, &self.redis).await;
        if let ListenAddr::Unix(path) = &self.settings.listen {
            let _ = std::fs::remove_file(path);
        }
        info!("stopped");
        Ok(())
    }

    /// Stops an instance that never ran (in-process callers, such as the benchmark): its
    /// background tasks, pool and Redis connection.
    pub async fn close(self) {
        close_parts(&self.tasks, &self.db, &self.redis).await;
    }
}

/// Stops the background tasks and closes the pool and the Redis connection.
async fn close_parts(tasks: &[tokio::task::JoinHandle<()>], db: &Db, redis: &Redis) {
    for task in tasks {
        task.abort();
    }
    db.close();
    redis.close().await;
}

async fn bind(listen: &ListenAddr) -> anyhow::Result<Listener> {
    match listen {
        ListenAddr::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("--listen: cannot bind {addr}"))?;
            Ok(Listener::Tcp(l))
        }
        ListenAddr::Unix(path) => {
            // A socket file left by a process that died is stale: nothing listens on it.
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)
                .with_context(|| format!("--listen: cannot bind unix:{}", path.display()))?;
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

/// `hotchan migrate --partition-messages N`: converts `messages`, showing progress.
pub async fn convert_messages(db: &DatabaseSettings, partitions: u32) -> anyhow::Result<()> {
    use crate::postgres::partition::{partition_messages, Converted, Step, When};
    use crate::progress::{human, Progress};
    /// Ids per copy statement: large enough that a statement costs little, small enough
    /// that the bar moves.
    const BATCH_IDS: i64 = 200_000;
    let started = std::time::Instant::now();
    let mut copy: Option<Progress> = None;
    let mut show = |step: Step| {
        match step {
            Step::Copy {
                done_ids,
                total_ids,
            } => copy
                .get_or_insert_with(|| Progress::new("copying messages", total_ids))
                .set(done_ids),
            Step::Build { next, done, total } => {
                if let Some(bar) = copy.take() {
                    bar.finish();
                }
                eprintln!(
                    "building {next} ({}/{total}; {} so far)",
                    done + 1,
                    human(started.elapsed())
                );
            }
        }
        std::ops::ControlFlow::Continue(())
    };
    info!(
        partitions,
        "converting messages: writes to it wait until this is done"
    );
    match partition_messages(&db.pg(), partitions, When::Always, BATCH_IDS, &mut show).await? {
        Converted::Rows(rows) => info!(
            rows,
            partitions,
            took = %human(started.elapsed()),
            "messages is hash-partitioned by channel"
        ),
        Converted::Skipped(layout) => info!(?layout, "nothing to convert"),
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers at once (so a signal that arrives once
/// "serving" is logged is never met by the default action, which kills the process), and
/// returns a future that completes on either.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => info!("received SIGTERM"),
            _ = int.recv() => info!("received SIGINT"),
        }
    }
}
