//! The bounded worker pool: at most `pool.workers` jobs are handled at once, and every job
//! task is tracked so shutdown can wait for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Consumer;
use lapin::message::Delivery;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Liveness;
use crate::handler::{JobHandler, LedgerGate};
use crate::shutdown::Shutdown;

/// The reason consuming stopped.
#[derive(Debug)]
pub enum ConsumeEnd {
    /// Shutdown began. Holds the deliveries read but not handed out, for the caller to
    /// return once the consumer is cancelled.
    Stopped(Vec<Delivery>),
    /// The broker closed the consumer, its channel or its connection.
    Lost(String),
    /// A job found the ledger unreachable; consuming pauses until it is back. Holds the
    /// deliveries read but not handed out, as for `Stopped`.
    LedgerUnavailable(Vec<Delivery>),
}

pub struct WorkerPool {
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl WorkerPool {
    pub fn new(workers: usize) -> WorkerPool {
        WorkerPool {
            slots: Arc::new(Semaphore::new(workers.max(1))),
            tracker: TaskTracker::new(),
        }
    }

    /// Reads deliveries from `consumer` and hands each to a job task when a worker is free.
    /// Returns when shutdown begins, the consumer ends, the ledger gate closes, or
    /// `liveness` finds something closed, whichever comes first, even with every worker busy.
    pub async fn consume(
        &self,
        consumer: &mut Consumer,
        liveness: &Liveness,
        handler: &Arc<JobHandler>,
        shutdown: &Shutdown,
        ledger_gate: &LedgerGate,
    ) -> ConsumeEnd {
        let lost = liveness.lost();
        tokio::pin!(lost);
        // Deliveries read but not yet handed out. The stream is read even with every worker
        // busy, so that a consumer cancelled by the broker ends consuming at once. RabbitMQ
        // sends at most `broker.prefetch` unacknowledged deliveries, which bounds this.
        let mut waiting: VecDeque<Delivery> = VecDeque::new();
        let end = loop {
            tokio::select! {
                biased;
                () = shutdown.stopped() => break ConsumeEnd::Stopped(Vec::new()),
                reason = &mut lost => break ConsumeEnd::Lost(reason.to_owned()),
                slot = self.slots.clone().acquire_owned(), if !waiting.is_empty() => {
                    let slot = slot.expect("the semaphore is never closed");
                    if let Some(reason) = liveness.check() {
                        break ConsumeEnd::Lost(reason.to_owned());
                    }
                    if !ledger_gate.is_open() {
                        break ConsumeEnd::LedgerUnavailable(Vec::new());
                    }
                    let delivery = waiting.pop_front().expect("a delivery is waiting");
                    let handler = handler.clone();
                    let shutdown = shutdown.clone();
                    self.tracker.spawn(async move {
                        handler.handle(delivery, shutdown).await;
                        drop(slot);
                    });
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => waiting.push_back(delivery),
                    Some(Err(error)) => break ConsumeEnd::Lost(error.to_string()),
                    None => break ConsumeEnd::Lost("the broker cancelled the consumer".to_owned()),
                },
            }
        };
        // Requeueing here, while the consumer is still active, would make RabbitMQ send the
        // same messages straight back, and a quorum queue would count two returns against
        // its delivery limit. A lost session's deliveries return when its connection closes.
        match end {
            ConsumeEnd::Stopped(_) => ConsumeEnd::Stopped(waiting.into()),
            ConsumeEnd::LedgerUnavailable(_) => ConsumeEnd::LedgerUnavailable(waiting.into()),
            lost => lost,
        }
    }

    /// Returns the number of jobs under way.
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Waits for jobs under way to finish. When `grace` runs out first, aborts them through
    /// `shutdown`, which leaves their deliveries unacknowledged for redelivery.
    pub async fn drain(&self, grace: Duration, shutdown: &Shutdown) {
        self.tracker.close();
        let in_flight = self.tracker.len();
        if in_flight > 0 {
            info!(
                in_flight,
                grace_secs = grace.as_secs(),
                "waiting for jobs under way"
            );
        }
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                unfinished = self.tracker.len(),
                "grace period ended; unfinished jobs stay unacknowledged for redelivery"
            );
            shutdown.abort();
            self.tracker.wait().await;
        }
        self.tracker.reopen();
    }
}

/// Returns a delivery to its queue.
pub(crate) async fn requeue(delivery: &Delivery) {
    let options = lapin::options::BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    if let Err(error) = delivery.nack(options).await {
        warn!(delivery_tag = delivery.delivery_tag, error.message = %error, "failed to return a delivery to the queue; RabbitMQ will when the channel closes");
    }
}
