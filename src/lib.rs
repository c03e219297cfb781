//! ringq's engine: a durable, crash-safe message queue in one directory.
//!
//! - [`ring`](crate::ring): slots and per-topic ready lists; [`dedup`]:
//!   the key index; [`timers`]: lease and delay heaps; [`dlq`]: the
//!   dead-letter ring; [`state`]: all of them and the one `apply` that
//!   changes them.
//! - [`journal`]: the write-ahead log (mmap'd, preallocated, CRC'd segments,
//!   prepared ahead); [`snapshot`]; [`recovery`]; [`sync`]: group commit;
//!   [`storage`]: file operations with fault injection and a durability
//!   observer; [`manifest`]: what a directory is and must hold; [`fork`]:
//!   what a `fork()` child may not do; [`clock`]: where the engine reads
//!   the time (the wall clock, or a manual one for tests).
//! - [`engine`]: the public [`Engine`].
//! - `bindings` (feature `python`): the only place PyO3 appears.
//!
//! ```
//! use ringq::{Engine, Options, Publish, PublishOpts, Wait};
//! use std::time::Duration;
//! let dir = tempfile::tempdir().unwrap();
//! let q = Engine::open(dir.path().join("q"), Options::default()).unwrap();
//! let p = Publish { topic: "orders", payload: b"hello", ..Default::default() };
//! let (id, _lsn) = q.publish(p, PublishOpts::default(), Wait::No).unwrap();
//! let got = q.checkout("orders", 10, Duration::from_secs(30), Wait::No).unwrap();
//! assert_eq!(got[0].id, id);
//! q.ack(&[(got[0].id, got[0].lease_token)], &[], Wait::No).unwrap();
//! q.close().unwrap();
//! ```

pub mod blocking;
pub mod clock;
mod codec;
mod dedup;
mod dlq;
pub mod engine;
pub mod error;
pub mod fork;
pub mod histogram;
pub mod inspect;
pub mod journal;
mod lock;
#[doc(hidden)]
pub mod loom;
pub mod manifest;
pub mod payload;
pub mod policies;
pub mod record;
pub mod recovery;
pub mod repair;
mod ring;
pub mod shared;
pub mod snapshot;
mod state;
pub mod storage;
pub mod store;
pub mod sync;
mod timers;
pub mod types;

#[cfg(feature = "python")]
mod bindings;

/// Every Rust allocation of the engine (messages, payloads, buffers) comes
/// from mimalloc. glibc's malloc merges a freed chunk with its free
/// neighbours, which made acking messages out of publish order (priorities,
/// ordering keys, retries) read a cold neighbour per message; mimalloc frees
/// into per-page lists. Measured in docs/benchmarks.md ("Allocator"). Python's
/// objects keep Python's allocator, and no allocation crosses between the
/// two: bytes handed to Python are copied into Python objects.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use clock::Clock;
pub use engine::{
    AckOutcome, CANCEL_IN_FLIGHT, CANCEL_NOT_FOUND, CANCEL_WAITING, Checkout, Engine, Publish, PublishOpts, Stat,
    TopicPolicy, TopicStat,
};
pub use error::{Error, Result};
pub use lock::{LOCK_FILE, read_owner_pid};
pub use manifest::{MANIFEST_FILE, Manifest};
pub use recovery::RecoveryReport;
pub use shared::SharedQueue;
pub use storage::FaultPoint;
pub use store::Store;
pub use types::*;
