//! One pub/sub subscription on a connection of its own, as a stream of events. Lost
//! messages are never silent: a reconnect or a lagging reader is an event of its own, so
//! the consumer can drop what it may have missed invalidations for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::RedisError;

/// How many events wait for the consumer; when full, the forwarder waits (and fred's own
/// buffer below it may lag, which becomes [`SubscriptionEvent::Lost`]).
pub const EVENT_BUFFER: usize = 4096;
/// Pause between subscribe attempts while Redis is unreachable.
const RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// A message on the channel.
    Message(String),
    /// Messages may have been lost (the connection dropped, or the reader lagged).
    Lost,
}

pub struct Subscription {
    events: mpsc::Receiver<SubscriptionEvent>,
    task: tokio::task::JoinHandle<()>,
    /// The subscriber connection in use, closed when the subscription is dropped.
    client: Current,
}

type Current = Arc<Mutex<Option<SubscriberClient>>>;

/// Makes a subscriber connection, not at the node named (the one that just failed); with
/// the node it is at when the node can change (a cluster), else `None`.
pub(super) type MakeSubscriber =
    dyn Fn(Option<&str>) -> Result<(SubscriberClient, Option<String>), RedisError> + Send + Sync;

impl Subscription {
    pub(super) async fn start(
        make: Box<MakeSubscriber>,
        channel: String,
        timeout: Duration,
    ) -> Result<Subscription, RedisError> {
        let first = make(None)?;
        let client: Current = Arc::new(Mutex::new(None));
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let forwarder = Forwarder {
            make,
            channel,
            timeout,
            tx,
            current: client.clone(),
        };
        let task = tokio::spawn(forwarder.run(first));
        Ok(Subscription {
            events,
            task,
            client,
        })
    }

    /// Events waiting for the consumer (at most [`EVENT_BUFFER`]).
    pub fn backlog(&self) -> usize {
        self.events.len()
    }

    /// The next event; `None` once the subscription is closed.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }
}

impl Drop for Subscription {
    /// Stops forwarding and closes the subscriber connection (fred's connection task
    /// would otherwise reconnect forever).
    fn drop(&mut self) {
        self.task.abort();
        let client = self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        quit_later(client);
    }
}

/// Closes `client` in the background, if there is a runtime to do it on.
fn quit_later(client: Option<SubscriberClient>) {
    let Some(client) = client else {
        return;
    };
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(200), client.quit()).await;
        });
    }
}

struct Forwarder {
    make: Box<MakeSubscriber>,
    channel: String,
    timeout: Duration,
    tx: mpsc::Sender<SubscriptionEvent>,
    current: Current,
}

impl Forwarder {
    /// Forwards messages until the consumer is gone. Messages that may be missing (a
    /// reconnect, a lagging reader, a subscribe that does not go through) are said first.
    async fn run(self, first: (SubscriberClient, Option<String>)) {
        let (mut client, mut node) = first;
        loop {
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
            let _connection = client.connect();
            let outcome = self.forward(&client, node.is_some()).await;
            if outcome == Outcome::ConsumerGone {
                return;
            }
            // On a cluster: its node failed; subscribe at another one.
            quit_later(
                self.current
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            );
            loop {
                match (self.make)(node.as_deref()) {
                    Ok(made) => {
                        (client, node) = made;
                        break;
                    }
                    Err(_) => tokio::time::sleep(RETRY).await,
                }
            }
        }
    }

    async fn lost(&self) -> Outcome {
        match self.tx.send(SubscriptionEvent::Lost).await {
            Ok(()) => Outcome::NodeFailed,
            Err(_) => Outcome::ConsumerGone,
        }
    }

    /// Subscribes, then forwards until the consumer is gone, or, when `movable`, until
    /// the connection fails (the caller then subscribes at another node).
    async fn forward(&self, client: &SubscriberClient, movable: bool) -> Outcome {
        let mut messages = client.message_rx();
        let mut reconnects = client.reconnect_rx();
        let mut errors = client.error_rx();
        loop {
            // (Re)subscribe until it works: until then nothing arrives, so say so first.
            loop {
                let subscribe = client.subscribe(self.channel.as_str());
                match tokio::time::timeout(self.timeout * 5, subscribe).await {
                    Ok(Ok(())) => break,
                    _ => {
                        let outcome = self.lost().await;
                        if movable || outcome == Outcome::ConsumerGone {
                            return outcome;
                        }
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            loop {
                let event = tokio::select! {
                    m = messages.recv() => match m {
                        Ok(m) => match m.value.as_str() {
                            Some(text) => SubscriptionEvent::Message(text.into_owned()),
                            None => continue,
                        },
                        Err(RecvError::Lagged(_)) => SubscriptionEvent::Lost,
                        Err(RecvError::Closed) => return Outcome::ConsumerGone,
                    },
                    r = reconnects.recv() => match r {
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            if self.lost().await == Outcome::ConsumerGone {
                                return Outcome::ConsumerGone;
                            }
                            break; // resubscribe on the new connection
                        }
                        Err(RecvError::Closed) => return Outcome::ConsumerGone,
                    },
                    e = errors.recv(), if movable => match e {
                        Err(RecvError::Closed) => return Outcome::ConsumerGone,
                        _ => return self.lost().await,
                    },
                };
                if self.tx.send(event).await.is_err() {
                    return Outcome::ConsumerGone;
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The consumer dropped the subscription.
    ConsumerGone,
    /// The subscriber's node failed (on a cluster): subscribe at another.
    NodeFailed,
}
