//! [`follow`]: the task that keeps this edge's functions in step with the log's
//! `$functions` channel.
//!
//! It subscribes from the channel's start (after a link loss: right after the last
//! record applied) and applies every record in log order, compiling on a blocking
//! thread so the runtime's workers keep serving messages. It marks the edge caught up
//! (readiness) once it has applied what the channel held when it subscribed.
//!
//! ```text
//!  link up ─▶ subscribe $functions (Start | After(last)) ─▶ Subscribed{last = tail}
//!          ─▶ Messages ─▶ apply each (spawn_blocking) ─▶ caught up when last ≥ tail
//!  link down / stream closed ─▶ wait for the link ─▶ subscribe again after `last`
//! ```

use std::sync::Arc;
use std::time::Duration;

use tern_link::{ChannelName, Position, SubscribeFrom};
use tern_log::net::{LogClient, SubscriptionEvent};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{CHANNEL, Functions};

/// Wait before subscribing again after a failure.
const RETRY: Duration = Duration::from_millis(250);

/// Follows `$functions` until `shutdown` turns true.
pub(crate) async fn follow(
    functions: Arc<Functions>,
    mut client: watch::Receiver<Option<LogClient>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let channel = ChannelName::parse(CHANNEL).expect("$functions is a valid channel name");
    let mut last: Option<Position> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let current = client.borrow_and_update().clone();
        let Some(log) = current.filter(|c| !c.is_closed()) else {
            tokio::select! {
                _ = client.changed() => {}
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(RETRY) => {}
            }
            continue;
        };
        let from = last.map_or(SubscribeFrom::Start, SubscribeFrom::After);
        let mut subscription = match log.subscribe(&channel, from).await {
            Ok(subscription) => subscription,
            Err(error) => {
                debug!(%error, "cannot follow $functions yet");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // The channel's last position when the subscription started: applied up to
        // there, the edge is caught up.
        let mut tail: Option<Option<Position>> = None;
        loop {
            let event = tokio::select! {
                event = subscription.next_event() => event,
                _ = shutdown.changed() => return,
            };
            match event {
                Some(SubscriptionEvent::Subscribed { last: at_start, .. }) => {
                    // A mid-stream Subscribed (a retention gap) repeats it.
                    tail = Some(at_start);
                }
                Some(SubscriptionEvent::Messages { messages, .. }) => {
                    for stored in messages {
                        if last.is_some_and(|l| stored.position.serial <= l.serial) {
                            continue;
                        }
                        let position = stored.position;
                        let apply = Arc::clone(&functions);
                        if let Err(error) =
                            tokio::task::spawn_blocking(move || apply.apply(&stored)).await
                        {
                            warn!(%error, %position, "applying a $functions record failed");
                        }
                        last = Some(position);
                    }
                }
                Some(SubscriptionEvent::Error(error)) => {
                    warn!(%error, "the log refused the $functions subscription");
                }
                Some(SubscriptionEvent::Unsubscribed { .. })
                | Some(SubscriptionEvent::Closed(_))
                | None => break,
                Some(_) => {}
            }
            if let Some(tail) = tail
                && tail.is_none_or(|t| last.is_some_and(|l| l.serial >= t.serial))
            {
                functions.mark_caught_up();
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}
