//! The way into the engine task: events in, answers back on oneshot channels.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::api::{AlertRecord, CheckKey, HealthCheckStatus, RunId, RunResult};
use crate::engine::{Desired, Rejection, RunEnd, RunRefused};

/// Events queued towards the engine before senders wait.
const QUEUE: usize = 8192;

#[derive(Debug)]
pub enum Event {
    Upsert {
        desired: Desired,
        saved: Option<Box<HealthCheckStatus>>,
    },
    Remove {
        key: CheckKey,
    },
    /// The initial set of checks has been delivered.
    Loaded,
    Released {
        uuid: RunId,
        end: RunEnd,
    },
    Report {
        uuid: RunId,
        result: RunResult,
        reply: oneshot::Sender<Result<(), Rejection>>,
    },
    /// A run this process carried out itself (a probe) ended: its report and its release in
    /// one, with nobody waiting for the outcome to be stored.
    Ended {
        uuid: RunId,
        result: RunResult,
    },
    RunNow {
        key: CheckKey,
        reply: oneshot::Sender<Result<(), RunRefused>>,
    },
    /// A heartbeat check's job pinged (see `Engine::heartbeat`).
    Heartbeat {
        key: CheckKey,
        beat: crate::api::heartbeat::Beat,
        reply: oneshot::Sender<Result<(), Rejection>>,
    },
    /// A notification receiver was told of a check's state (see `Engine::notified`).
    Notified {
        key: CheckKey,
        record: AlertRecord,
    },
    /// A manual run asked for at this time (see `Engine::request_run`).
    RequestRun {
        key: CheckKey,
        at: DateTime<Utc>,
        reply: oneshot::Sender<Result<(), RunRefused>>,
    },
}

/// The way into the engine task; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Event>,
}

impl EngineHandle {
    pub fn channel() -> (EngineHandle, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (EngineHandle { tx }, rx)
    }

    pub async fn send(&self, ev: Event) {
        // Only fails once the engine has stopped, when nothing is left to tell.
        let _ = self.tx.send(ev).await;
    }

    pub async fn upsert(&self, desired: Desired, saved: Option<HealthCheckStatus>) {
        self.send(Event::Upsert {
            desired,
            saved: saved.map(Box::new),
        })
        .await
    }

    pub async fn remove(&self, key: CheckKey) {
        self.send(Event::Remove { key }).await
    }

    pub async fn loaded(&self) {
        self.send(Event::Loaded).await
    }

    pub async fn notified(&self, key: CheckKey, record: AlertRecord) {
        self.send(Event::Notified { key, record }).await
    }

    pub async fn released(&self, uuid: RunId, end: RunEnd) {
        self.send(Event::Released { uuid, end }).await
    }

    /// A probe's run ended with `result` (see [`Event::Ended`]).
    pub async fn ended(&self, uuid: RunId, result: RunResult) {
        self.send(Event::Ended { uuid, result }).await
    }

    /// Hands a report to the engine; resolves once the outcome is stored (or refused).
    pub async fn report(&self, uuid: RunId, result: RunResult) -> Result<(), Rejection> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Report {
                uuid,
                result,
                reply,
            })
            .await
            .map_err(|_| Rejection::ShuttingDown)?;
        rx.await.unwrap_or(Err(Rejection::ShuttingDown))
    }

    /// Hands a heartbeat check's ping to the engine; resolves once it is stored (or refused).
    pub async fn heartbeat(
        &self,
        key: CheckKey,
        beat: crate::api::heartbeat::Beat,
    ) -> Result<(), Rejection> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Heartbeat { key, beat, reply })
            .await
            .map_err(|_| Rejection::ShuttingDown)?;
        rx.await.unwrap_or(Err(Rejection::ShuttingDown))
    }

    pub async fn request_run(&self, key: CheckKey, at: DateTime<Utc>) -> Result<(), RunRefused> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::RequestRun { key, at, reply })
            .await
            .map_err(|_| RunRefused::Stopped)?;
        rx.await.unwrap_or(Err(RunRefused::Stopped))
    }

    pub async fn run_now(&self, key: CheckKey) -> Result<(), RunRefused> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::RunNow { key, reply })
            .await
            .map_err(|_| RunRefused::Stopped)?;
        rx.await.unwrap_or(Err(RunRefused::Stopped))
    }
}
