//! Many processes on one queue directory.
//!
//! The first process to open the directory as shared *owns* it: it holds the
//! [`Engine`] and serves its socket ([`server`]). Every later one is a
//! [`client`] of the owner, with the same operations ([`Store`]). When the
//! owner goes away, a client's calls in flight fail with `OwnerGone`; its
//! next call connects to whoever owns the directory then — or, if nobody
//! does, takes the directory over (recovery runs as for any open) and serves
//! the others. The bytes on the socket: [`wire`], `docs/protocol.md`.

pub mod addr;
pub mod client;
mod frames;
pub mod loop_conn;
pub mod server;
pub mod wire;

use crate::engine::{AckOutcome, Checkout, Engine, Publish, PublishOpts, Stat, TopicPolicy, TopicStat};
use crate::error::{Error, Result};
use crate::store::{Histograms, Stats, Store};
use crate::types::{DeadLetter, Delivered, Durability, Failure, Lsn, Options, Wait};
use client::Client;
use parking_lot::{Mutex, RwLock};
use server::Server;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// How long an open (or a takeover) keeps trying when the directory is
/// owned but its owner does not answer yet (it is starting, or just died).
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// This process's role.
enum Mode {
    Owner { engine: Arc<Engine>, server: Server },
    Client(Box<Client>),
}

/// A queue directory shared by processes: owned here or reached as a client.
pub struct SharedQueue {
    dir: PathBuf,
    opts: Options,
    instance: u64,
    mode: RwLock<Mode>,
    /// The current owner's durability as last read (see `durability`).
    durability: AtomicU8,
    /// Topic policies set here, for an engine this process takes over.
    policies: Mutex<Vec<(String, TopicPolicy)>>,
}

/// Opens `dir` as owner (serving it) or, if another process owns it, as its
/// client. Waits up to [`CONNECT_PATIENCE`] for an owner that does not
/// answer yet.
fn open_mode(dir: &Path, opts: &Options) -> Result<Mode> {
    let started = Instant::now();
    let mut last: Option<Error> = None;
    let mut locked: Option<Error> = None;
    while started.elapsed() < CONNECT_PATIENCE {
        match Engine::open(dir, opts.clone()) {
            Ok(engine) => {
                let engine = Arc::new(engine);
                let server = Server::start(Arc::clone(&engine))?;
                return Ok(Mode::Owner { engine, server });
            }
            Err(e @ Error::Locked { .. }) => locked = Some(e),
            // This process may not own the directory (another user's, or
            // read-only here): it can still be a client of the owner.
            Err(e) if matches!(e.errno(), Some(libc::EACCES | libc::EPERM | libc::EROFS)) => {
                return match Client::connect(dir) {
                    Ok(c) => Ok(Mode::Client(Box::new(c))),
                    Err(Error::OwnerGone(_)) => Err(e),
                    Err(other) => Err(other),
                };
            }
            Err(e) => return Err(e),
        }
        match Client::connect(dir) {
            Ok(c) => return Ok(Mode::Client(Box::new(c))),
            Err(e @ Error::OwnerGone(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still owned, and still no socket recorded: the owner opened it
    // without shared=True (it serves nobody). Said as any second opener is
    // told, naming the owner, rather than "no process serves" it.
    if let Some(e) = locked.filter(|_| addr::read(dir).is_none()) {
        return Err(e);
    }
    Err(last.unwrap_or_else(|| Error::OwnerGone(format!("no process serves the shared queue {}", dir.display()))))
}

impl SharedQueue {
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<SharedQueue> {
        opts.validate()?;
        let dir = dir.as_ref().to_owned();
        let mode = open_mode(&dir, &opts)?;
        let instance = match &mode {
            Mode::Owner { engine, .. } => engine.instance_id(),
            Mode::Client(c) => c.instance_id(),
        };
        let durability = AtomicU8::new(wire::durability_code(mode_durability(&mode)));
        Ok(SharedQueue { dir, opts, instance, mode: RwLock::new(mode), durability, policies: Mutex::new(Vec::new()) })
    }

    /// `"owner"` or `"client"`.
    pub fn role(&self) -> &'static str {
        match &*self.mode.read() {
            Mode::Owner { .. } => "owner",
            Mode::Client(_) => "client",
        }
    }

    /// Where the owner listens (as the owner knows it; `None` for a client).
    pub fn address(&self) -> Option<String> {
        match &*self.mode.read() {
            Mode::Owner { server, .. } => Some(server.address().to_string()),
            Mode::Client(_) => None,
        }
    }

    /// Runs `f` on the store behind this queue now. A client whose owner is
    /// gone first reconnects or takes over (nothing was sent yet, so `f`
    /// runs once, against the new owner).
    fn with<T>(&self, f: impl Fn(&dyn Store) -> Result<T>) -> Result<T> {
        {
            let mode = self.mode.read();
            match &*mode {
                Mode::Owner { engine, .. } => return f(&**engine),
                Mode::Client(c) => match c.connection() {
                    Ok(()) => return f(&**c),
                    Err(Error::OwnerGone(_)) => {}
                    Err(e) => return Err(e),
                },
            }
        }
        self.take_over()?;
        let mode = self.mode.read();
        match &*mode {
            Mode::Owner { engine, .. } => f(&**engine),
            Mode::Client(c) => f(&**c),
        }
    }

    /// The owner is gone: become the owner, or a client of the new one.
    fn take_over(&self) -> Result<()> {
        let mut mode = self.mode.write();
        // The queue its clients were told of goes on: its options are the
        // last owner's (as it said when this client last connected: a
        // client keeps the welcome of each reconnection, so an owner
        // restarted with "always" is not taken over as the first one's
        // "batch"), not those this process opened with (a client's
        // options but `lease` are not the queue's). Taken over with this
        // process's own, an "always" queue could go on as "batch" (calls
        // answered before their fsync), and a smaller `dlq_capacity` cut
        // the oldest dead letters for good at the open.
        let opts = match &*mode {
            Mode::Owner { .. } => return Ok(()),
            Mode::Client(c) => match c.connection() {
                Ok(()) => return Ok(()),
                Err(Error::OwnerGone(_)) => {
                    let w = c.welcome();
                    w.queue.apply(Options {
                        durability: w.durability,
                        capacity: usize::try_from(w.capacity).unwrap_or(usize::MAX),
                        max_attempts: w.max_attempts,
                        ..self.opts.clone()
                    })
                }
                Err(e) => return Err(e),
            },
        };
        let new = open_mode(&self.dir, &opts)?;
        let instance = match &new {
            Mode::Owner { engine, .. } => engine.instance_id(),
            Mode::Client(c) => c.instance_id(),
        };
        if instance != self.instance {
            return Err(Error::OwnerGone(format!(
                "the queue directory {} now holds another queue (identity {}): open it again",
                self.dir.display(),
                crate::error::fmt_id(instance)
            )));
        }
        let store: &dyn Store = match &new {
            Mode::Owner { engine, .. } => &**engine,
            Mode::Client(c) => &**c,
        };
        for (topic, p) in self.policies.lock().iter() {
            store.set_topic_policy(topic, p.clone())?;
        }
        self.durability.store(wire::durability_code(mode_durability(&new)), Ordering::Relaxed);
        *mode = new;
        Ok(())
    }
}

fn mode_durability(mode: &Mode) -> Durability {
    match mode {
        Mode::Owner { engine, .. } => engine.durability(),
        Mode::Client(c) => c.durability(),
    }
}

impl Store for SharedQueue {
    fn path(&self) -> &Path {
        &self.dir
    }
    fn instance_id(&self) -> u64 {
        self.instance
    }
    /// The current owner's (a queue taken over goes on with the options of
    /// the owner this process last connected to). Never waits for the
    /// mode's lock: the bindings ask after each publish with the GIL held,
    /// and a takeover waiting for the write lock (behind a long blocking
    /// call) would stop every Python thread; the value last read then.
    fn durability(&self) -> Durability {
        if let Some(mode) = self.mode.try_read() {
            let d = mode_durability(&mode);
            self.durability.store(wire::durability_code(d), Ordering::Relaxed);
            return d;
        }
        wire::durability_of(self.durability.load(Ordering::Relaxed)).expect("stored by durability_code")
    }
    fn is_closed(&self) -> bool {
        match &*self.mode.read() {
            Mode::Owner { engine, .. } => engine.is_closed(),
            Mode::Client(c) => c.is_closed(),
        }
    }
    fn is_forked(&self) -> bool {
        match &*self.mode.read() {
            Mode::Owner { engine, .. } => engine.is_forked(),
            Mode::Client(c) => c.is_forked(),
        }
    }
    fn check_not_forked(&self) -> Result<()> {
        match &*self.mode.read() {
            Mode::Owner { engine, .. } => engine.check_not_forked(),
            Mode::Client(c) => c.check_not_forked(),
        }
    }
    fn would_wait(&self) -> bool {
        match self.mode.try_read().as_deref() {
            Some(Mode::Owner { engine, .. }) => engine.would_wait(),
            _ => true,
        }
    }
    fn wait_durable(&self, lsn: Option<Lsn>) -> Result<()> {
        match &*self.mode.read() {
            Mode::Owner { engine, .. } => engine.wait_durable(lsn),
            Mode::Client(_) => Ok(()),
        }
    }
    fn publish(&self, p: Publish<'_>, opts: PublishOpts, wait: Wait) -> Result<(u64, Option<Lsn>)> {
        self.with(|s| s.publish(p, opts, wait))
    }
    fn publish_many(&self, items: &[Publish<'_>], opts: PublishOpts, wait: Wait) -> Result<(Vec<u64>, Option<Lsn>)> {
        self.with(|s| s.publish_many(items, opts, wait))
    }
    fn publish_payloads(&self, topic: &str, payloads: &[&[u8]], wait: Wait) -> Result<(Vec<u64>, Option<Lsn>)> {
        self.with(|s| s.publish_payloads(topic, payloads, wait))
    }
    fn checkout_with(&self, topic: &str, c: Checkout) -> Result<Vec<Delivered>> {
        self.with(|s| s.checkout_with(topic, c))
    }
    fn interrupts(&self, topic: &str) -> Result<u64> {
        self.with(|s| s.interrupts(topic))
    }
    fn interrupt(&self, topic: &str) -> Result<()> {
        self.with(|s| s.interrupt(topic))
    }
    fn ack(&self, leases: &[(u64, u64)], publish: &[Publish<'_>], wait: Wait) -> Result<AckOutcome> {
        self.with(|s| s.ack(leases, publish, wait))
    }
    fn release(&self, leases: &[(u64, u64)]) -> Result<AckOutcome> {
        self.with(|s| s.release(leases))
    }
    fn nack(
        &self,
        id: u64,
        token: u64,
        delay: Option<Duration>,
        failure: Failure,
        dead_letter_reason: Option<&str>,
    ) -> Result<Option<Lsn>> {
        self.with(|s| s.nack(id, token, delay, failure.clone(), dead_letter_reason))
    }
    fn extend(&self, id: u64, token: u64, by: Duration) -> Result<u64> {
        self.with(|s| s.extend(id, token, by))
    }
    fn set_topic_policy(&self, topic: &str, policy: TopicPolicy) -> Result<()> {
        self.with(|s| s.set_topic_policy(topic, policy.clone()))?;
        let mut ps = self.policies.lock();
        ps.retain(|(t, _)| t != topic);
        ps.push((topic.to_owned(), policy));
        Ok(())
    }
    fn is_superseded(&self, id: u64) -> Result<bool> {
        self.with(|s| s.is_superseded(id))
    }
    fn cancel(&self, id: u64) -> Result<(u8, Option<Lsn>)> {
        self.with(|s| s.cancel(id))
    }
    fn stats(&self) -> Result<Stats> {
        let mut stats = self.with(|s| s.stats())?;
        let (role, clients) = match &*self.mode.read() {
            Mode::Owner { server, .. } => ("owner", Stat::Int(server.clients() as u64)),
            Mode::Client(_) => ("client", Stat::None),
        };
        stats.retain(|(k, _)| k != "shared_role" && k != "shared_clients");
        stats.push(("shared_role".into(), Stat::Text(role.into())));
        if !matches!(clients, Stat::None) {
            stats.push(("shared_clients".into(), clients));
        }
        Ok(stats)
    }
    fn histograms(&self) -> Result<Histograms> {
        self.with(|s| s.histograms())
    }
    fn topic_stats(&self) -> Result<Vec<TopicStat>> {
        self.with(|s| s.topic_stats())
    }
    fn snapshot(&self) -> Result<Lsn> {
        self.with(|s| s.snapshot())
    }
    fn dlq_list(&self, topic: Option<&str>, reason: Option<&str>, limit: Option<usize>) -> Result<Vec<DeadLetter>> {
        self.with(|s| s.dlq_list(topic, reason, limit))
    }
    fn dlq_get(&self, id: u64) -> Result<DeadLetter> {
        self.with(|s| s.dlq_get(id))
    }
    fn dlq_replay(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)> {
        self.with(|s| s.dlq_replay(ids))
    }
    fn dlq_purge(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)> {
        self.with(|s| s.dlq_purge(ids))
    }
    fn close(&self) -> Result<()> {
        match &*self.mode.read() {
            Mode::Owner { engine, server } => {
                if engine.is_forked() {
                    return Ok(());
                }
                server.stop();
                engine.close()
            }
            Mode::Client(c) => {
                c.close();
                Ok(())
            }
        }
    }
    fn with_engine(&self, f: &mut dyn FnMut(&Engine)) -> bool {
        match &*self.mode.read() {
            Mode::Owner { engine, .. } => {
                f(engine);
                true
            }
            Mode::Client(_) => false,
        }
    }
}
