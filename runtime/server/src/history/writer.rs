//! The history's writer, whatever keeps it: writes go to a thread of their
//! own through a channel, batched into transactions, so event dispatch
//! never waits on the database. Writes the database refuses are held in
//! memory (at most [`MAX_HELD_WRITES`]) and tried again every second; a
//! start that cannot be written is refused, so its session never runs.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::oneshot;

use sessionbox_host::metrics::Metrics;
use sessionbox_host::session::SessionRecord;
use sessionbox_host::sync::MutexExt;

use super::{Health, NewSession};

/// Where the writer puts the history: one backend's database.
pub(crate) trait Sink: Send + 'static {
    /// Applies a batch in one transaction: all of it, or none.
    fn apply(&mut self, batch: &[Write]) -> Result<()>;

    /// A small write, to learn whether the database takes writes again.
    fn probe(&mut self) -> Result<()>;

    /// Drops finished sessions (and their logs) older than the retention.
    fn expire(&mut self, retention_days: u32) -> Result<()>;

    /// Makes every write fail (`true`) or work again: the unit tests' full
    /// disk, on the SQLite backend. (PostgreSQL's is cut off for real in
    /// tests/all/backends.rs.)
    #[cfg(test)]
    fn refuse_writes(&mut self, _refuse: bool) {
        unimplemented!("only the SQLite backend is tested with refused writes")
    }
}

pub(crate) enum Write {
    /// A session that starts; told whether its row was committed.
    Started {
        session: NewSession,
        committed: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    Finished {
        session: NewSession,
        record: Arc<SessionRecord>,
        /// Runs once the record is committed (e.g. to retire the live entry,
        /// so a reader never finds the session in neither place).
        then: Box<dyn FnOnce() + Send>,
    },
    /// A session that never ran; `forgotten` hears once its row is gone,
    /// or once its removal is held for want of a disk.
    Forget {
        id: String,
        forgotten: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// Runs once everything before it is committed and has had its
    /// consequences.
    Flush(Box<dyn FnOnce() + Send>),
    /// Makes every write fail (`true`) or work again: a disk that fills.
    #[cfg(test)]
    RefuseWrites(bool),
}

/// Writes held in memory for want of a disk, at most: past this, starts are
/// refused at once (every held write is a finished session's record, or
/// the removal of one that failed to start, so the sessions live when the
/// disk failed bound it in practice).
pub const MAX_HELD_WRITES: usize = 10_000;

/// How often held writes are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long closing keeps trying to write what is held.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// The server's side of the writer: what it sends, and the health the
/// writer reports.
pub(crate) struct Writes {
    sender: Mutex<Option<Sender<Write>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    health: Arc<Mutex<Health>>,
}

impl Writes {
    /// Starts the writer thread over `sink`.
    pub fn start(sink: impl Sink, retention_days: u32, metrics: Arc<Metrics>) -> Result<Writes> {
        let (sender, writes) = mpsc::channel();
        let health = Arc::new(Mutex::new(Health::default()));
        let writer = Writer {
            sink,
            held: Vec::new(),
            failures: 0,
            health: Arc::clone(&health),
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name("sessionbox-history".into())
            .spawn(move || writer.run(writes, retention_days))?;
        Ok(Writes {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            health,
        })
    }

    fn send(&self, write: Write) {
        if let Some(sender) = &*self.sender.locked() {
            // The writer only stops when `close` takes the sender.
            let _ = sender.send(write);
        }
    }

    pub fn health(&self) -> Health {
        self.health.locked().clone()
    }

    pub fn started(&self, session: NewSession) -> oneshot::Receiver<Result<(), String>> {
        let (committed, outcome) = oneshot::channel();
        let held = self.health().held_writes;
        if held >= MAX_HELD_WRITES {
            let _ = committed.send(Err(format!(
                "{held} writes are waiting for the database, the most held"
            )));
        } else {
            self.send(Write::Started { session, committed });
        }
        outcome
    }

    pub fn finished(
        &self,
        session: NewSession,
        record: Arc<SessionRecord>,
        then: Box<dyn FnOnce() + Send>,
    ) {
        self.send(Write::Finished {
            session,
            record,
            then,
        });
    }

    pub fn forget(&self, id: &str) -> oneshot::Receiver<()> {
        let (forgotten, outcome) = oneshot::channel();
        self.send(Write::Forget {
            id: id.to_owned(),
            forgotten: Some(forgotten),
        });
        outcome
    }

    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Write::Flush(Box::new(move || {
            let _ = done.send(());
        })));
        let _ = wait.recv();
    }

    pub fn close(&self) {
        drop(self.sender.locked().take());
        if let Some(thread) = self.thread.locked().take() {
            let _ = thread.join();
        }
    }

    #[cfg(test)]
    pub fn refuse_writes(&self, refuse: bool) {
        self.send(Write::RefuseWrites(refuse));
    }
}

impl Drop for Writes {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes per transaction at most; more wait for the next one.
const BATCH: usize = 256;

/// How often a long-running server drops expired history.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// The writer thread's side: the database, and the writes it could not
/// commit yet.
struct Writer<S> {
    sink: S,
    /// Writes that failed, in order, tried again before anything new.
    held: Vec<Write>,
    /// Failed attempts since the last success.
    failures: u64,
    health: Arc<Mutex<Health>>,
    metrics: Arc<Metrics>,
}

impl<S: Sink> Writer<S> {
    fn run(mut self, writes: Receiver<Write>, retention_days: u32) {
        let mut next_expiry = std::time::Instant::now() + EXPIRY_INTERVAL;
        loop {
            let retrying = !self.held.is_empty() || self.failures > 0;
            let wait = if retrying {
                RETRY_EVERY
            } else {
                next_expiry.saturating_duration_since(std::time::Instant::now())
            };
            let batch = match writes.recv_timeout(wait) {
                Ok(write) => {
                    let mut batch = vec![write];
                    batch.extend(writes.try_iter().take(BATCH - 1));
                    batch
                }
                Err(mpsc::RecvTimeoutError::Timeout) if retrying => Vec::new(),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.sink.expire(retention_days) {
                        tracing::error!("expiring session history failed: {e:#}");
                    }
                    next_expiry += EXPIRY_INTERVAL;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.close(),
            };
            self.commit(batch);
        }
    }

    /// Commits what is held, then `batch`, each in one transaction. What
    /// fails is held for the next try, except starts: they are told, and
    /// their sessions do not run. While writes fail and nothing is held, a
    /// small write probes the disk, so the history reads as healthy again
    /// only once the disk takes writes.
    fn commit(&mut self, batch: Vec<Write>) {
        #[cfg(test)]
        let batch: Vec<Write> = batch
            .into_iter()
            .filter_map(|write| match write {
                Write::RefuseWrites(refuse) => {
                    self.sink.refuse_writes(refuse);
                    None
                }
                write => Some(write),
            })
            .collect();
        let mut wrote = None;
        // Answered once the health is up to date, so that whoever hears
        // back reads the history's state as it is after this commit.
        let mut done = Vec::new();
        let mut refused = Vec::new();
        let mut held_forgets = Vec::new();
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            match self.sink.apply(&held) {
                Ok(()) => {
                    done.extend(held);
                    wrote = Some(true);
                }
                Err(error) => {
                    self.held = held;
                    self.failed(&error);
                    wrote = Some(false);
                }
            }
        }
        // A flush answers only once everything before it is in: while
        // older writes are held, it waits with them.
        let (batch, flushes): (Vec<Write>, Vec<Write>) = if self.held.is_empty() {
            (batch, Vec::new())
        } else {
            batch
                .into_iter()
                .partition(|write| !matches!(write, Write::Flush(_)))
        };
        if !batch.is_empty() {
            match self.sink.apply(&batch) {
                Ok(()) => {
                    done.extend(batch);
                    wrote = Some(true);
                }
                Err(error) => {
                    self.failed(&error);
                    wrote = Some(false);
                    for write in batch {
                        match write {
                            Write::Started { committed, .. } => {
                                refused.push((committed, format!("{error:#}")));
                            }
                            Write::Forget { id, forgotten } => {
                                held_forgets.extend(forgotten);
                                self.held.push(Write::Forget {
                                    id,
                                    forgotten: None,
                                });
                            }
                            write => self.held.push(write),
                        }
                    }
                }
            }
        }
        self.held.extend(flushes);
        if wrote.is_none() && self.failures > 0 {
            match self.sink.probe() {
                Ok(()) => wrote = Some(true),
                Err(error) => self.failed(&error),
            }
        }
        if wrote == Some(true) && self.held.is_empty() && self.failures > 0 {
            tracing::info!(
                failed_attempts = self.failures,
                "the session history is written again; every held write is committed"
            );
            self.failures = 0;
            self.health.locked().error = None;
        }
        self.health.locked().held_writes = self.held.len();
        self.metrics.history_held_writes.set(self.held.len() as i64);
        for (committed, error) in refused {
            let _ = committed.send(Err(error));
        }
        for forgotten in held_forgets {
            let _ = forgotten.send(());
        }
        consequences(done);
    }

    fn failed(&mut self, error: &anyhow::Error) {
        self.failures += 1;
        self.metrics.history_write_failures.inc();
        self.health.locked().error = Some(format!("{error:#}"));
        // Once when it starts, then once a minute: not a line per try.
        if self.failures == 1 || self.failures.is_multiple_of(60) {
            tracing::error!(
                failed_attempts = self.failures,
                held_writes = self.held.len(),
                "writing the session history failed, holding the writes and trying again \
                 every {} s: {error:#}",
                RETRY_EVERY.as_secs()
            );
        }
    }

    /// The last commits before the process stops: what the disk still
    /// refuses after a while is lost, and its sessions will read as
    /// interrupted.
    fn close(mut self) {
        let give_up = std::time::Instant::now() + CLOSE_PATIENCE;
        self.commit(Vec::new());
        while !self.held.is_empty() && std::time::Instant::now() < give_up {
            std::thread::sleep(RETRY_EVERY.min(CLOSE_PATIENCE));
            self.commit(Vec::new());
        }
        if !self.held.is_empty() {
            tracing::error!(
                writes = self.held.len(),
                "session history writes could not be committed before the process stopped; \
                 their sessions will read as interrupted"
            );
        }
    }
}

/// What follows a batch's commit, in order: starts are answered, finished
/// sessions retired, flushes answered last.
fn consequences(batch: Vec<Write>) {
    let mut flushes = Vec::new();
    for write in batch {
        match write {
            Write::Started { committed, .. } => {
                let _ = committed.send(Ok(()));
            }
            Write::Finished { then, .. } => then(),
            Write::Forget { forgotten, .. } => {
                if let Some(forgotten) = forgotten {
                    let _ = forgotten.send(());
                }
            }
            Write::Flush(done) => flushes.push(done),
            #[cfg(test)]
            Write::RefuseWrites(_) => unreachable!("applied before the batch"),
        }
    }
    for done in flushes {
        done();
    }
}
