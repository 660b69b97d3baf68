//! One pub/sub subscription on a connection of its own, as a stream of events. Lost
//! messages are never silent: a reconnect or a lagging reader is an event of its own, so
//! the consumer can drop what it may have missed invalidations for.

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
    client: SubscriberClient,
}

impl Subscription {
    pub(super) async fn start(
        client: SubscriberClient,
        channel: String,
        timeout: Duration,
    ) -> Result<Subscription, RedisError> {
        let _connection = client.connect();
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let task = tokio::spawn(forward(client.clone(), channel, timeout, tx));
        Ok(Subscription {
            events,
            task,
            client,
        })
    }

    /// The next event; `None` once the subscription is closed.
    /// Events waiting for the consumer (at most [`EVENT_BUFFER`]).
    pub fn backlog(&self) -> usize {
        self.events.len()
    }

    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }
}

impl Drop for Subscription {
    /// Stops forwarding and closes the subscriber connection (fred's connection task
    /// would otherwise reconnect forever).
    fn drop(&mut self) {
        self.task.abort();
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_millis(200), client.quit()).await;
            });
        }
    }
}

async fn forward(
    client: SubscriberClient,
    channel: String,
    timeout: Duration,
    tx: mpsc::Sender<SubscriptionEvent>,
) {
    let mut messages = client.message_rx();
    let mut reconnects = client.reconnect_rx();
    loop {
        // (Re)subscribe until it works: until then nothing arrives, so say so first.
        loop {
            match tokio::time::timeout(timeout * 5, client.subscribe(channel.as_str())).await {
                Ok(Ok(())) => break,
                _ => {
                    if tx.send(SubscriptionEvent::Lost).await.is_err() {
                        return;
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
                    Err(RecvError::Closed) => return,
                },
                r = reconnects.recv() => match r {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        if tx.send(SubscriptionEvent::Lost).await.is_err() {
                            return;
                        }
                        break; // resubscribe on the new connection
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}
