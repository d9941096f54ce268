//! The connection a [`super::RabbitDispatcher`] shares among its publishes
//! and consumers, replaced whenever it dies.
//!
//! Whoever next needs the connection after it died (a publish, or a consumer
//! renewing its subscription) opens a new one; the others wait for it rather
//! than open their own. A new connection starts with a new publishing channel
//! (in confirm mode) and declares each queue again before publishing into it,
//! so that a broker that lost its queues gets them back.
//!
//! Outages are logged once each: a warning when the first call fails to
//! reach the broker, an info line when one succeeds again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use haul_common::duration::HumanDuration;
use haul_common::retry::RetryPolicy;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::{QueueKind, RabbitOptions, declare};
use crate::dispatch::Error;

pub(super) struct Link {
    url: String,
    options: RabbitOptions,
    session: Mutex<Session>,
    /// Set by [`Link::close`]: no connection is opened again.
    closed: AtomicBool,
    /// Whether an outage was reported and has not ended yet.
    outage: AtomicBool,
}

/// What lives as long as one connection.
#[derive(Default)]
struct Session {
    connection: Option<Connection>,
    /// The channel publishes go through, in confirm mode.
    publishing: Option<Channel>,
    /// The queues declared on this connection.
    declared: HashSet<String>,
}

/// A session whose connection is live, borrowed apart.
struct Live<'s> {
    connection: &'s Connection,
    publishing: &'s mut Option<Channel>,
    declared: &'s mut HashSet<String>,
}

impl Link {
    /// Opens the first connection; fails if the broker is unreachable.
    pub(super) async fn open(url: &str, options: RabbitOptions) -> Result<Self, Error> {
        let link = Link {
            url: url.to_string(),
            options,
            session: Mutex::default(),
            closed: AtomicBool::new(false),
            outage: AtomicBool::new(false),
        };
        link.revive(&mut *link.session.lock().await).await?;
        Ok(link)
    }

    pub(super) fn options(&self) -> &RabbitOptions {
        &self.options
    }

    /// The delays between attempts to reach the broker, without end.
    pub(super) fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        RetryPolicy {
            attempts: usize::MAX,
            initial_backoff: HumanDuration(self.options.reconnect_initial),
            max_backoff: HumanDuration(self.options.reconnect_max),
        }
        .delays()
    }

    /// The publishing channel of the live connection, with `queue` declared on it as `kind`.
    pub(super) async fn publishing_channel(&self, queue: &str, kind: QueueKind) -> Result<Channel, Error> {
        let mut session = self.session.lock().await;
        let Live { connection, publishing, declared } = self.revive(&mut session).await?;
        let channel = match publishing.as_ref().filter(|channel| channel.status().connected()) {
            Some(channel) => channel.clone(),
            None => {
                let channel = connection.create_channel().await?;
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                *publishing = Some(channel.clone());
                channel
            }
        };
        if !declared.contains(queue) {
            declare(&channel, queue, kind).await?;
            declared.insert(queue.to_string());
        }
        Ok(channel)
    }

    /// A new channel on the live connection.
    pub(super) async fn channel(&self) -> Result<Channel, Error> {
        let mut session = self.session.lock().await;
        let live = self.revive(&mut session).await?;
        Ok(live.connection.create_channel().await?)
    }

    /// Forgets that `queue` was declared: the next publish into it declares it.
    pub(super) async fn forget(&self, queue: &str) {
        self.session.lock().await.declared.remove(queue);
    }

    /// The parts of `session`, once its connection is live: a new connection
    /// (and a new session) if it died.
    async fn revive<'s>(&self, session: &'s mut Session) -> Result<Live<'s>, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if !session.connection.as_ref().is_some_and(|connection| connection.status().connected()) {
            let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
            *session = Session { connection: Some(connection), ..Session::default() };
        }
        let Session { connection, publishing, declared } = session;
        let connection = connection.as_ref().expect("a live connection");
        Ok(Live { connection, publishing, declared })
    }

    /// Closes the connection for good.
    pub(super) async fn close(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::SeqCst);
        let mut session = self.session.lock().await;
        // the connection closes its channels; dropping one first would start closing it alone
        let closing = match session.connection.as_ref() {
            Some(connection) if connection.status().connected() => connection.close(200, "closing".into()).await,
            _ => Ok(()),
        };
        *session = Session::default();
        Ok(closing?)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Reports a transient `error`: the connection or a channel is gone.
    pub(super) fn unreachable(&self, error: &Error) {
        if !self.outage.swap(true, Ordering::SeqCst) {
            tracing::warn!(%error, "lost the rabbitmq connection or a channel, reconnecting until the broker answers");
        }
    }

    /// Reports that a call reached the broker.
    pub(super) fn reachable(&self) {
        if self.outage.swap(false, Ordering::SeqCst) {
            tracing::info!("rabbitmq reachable again");
        }
    }
}
