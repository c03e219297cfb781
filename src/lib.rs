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

/// How long mimalloc keeps memory freed by the engine before giving it back
/// to the system, unless `MIMALLOC_PURGE_DELAY` says otherwise: 1 s where
/// mimalloc's default is 10 ms (jemalloc's decay is 10 s). A queue that is
/// drained and then refilled (a burst every second, a consumer catching up)
/// reuses its pages instead of faulting in fresh ones the kernel zeroes:
/// with 10 ms, `python -m ringq.bench`'s `publish_single` took 1.36–2.06M
/// messages/s when another benchmark ran between two queues and 2.2–2.8M
/// when none did; with 1 s, 2.13–2.19M either way (docs/benchmarks.md,
/// "Freed memory kept for a second"). The cost: memory a queue freed
/// stays in the process's RSS for up to a second longer (up to ten for
/// large buffers, which mimalloc purges ten times later).
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_t` (libmimalloc-sys
/// names no constant for it; a test checks the index against the variable
/// `MIMALLOC_PURGE_DELAY`).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's defaults for the engine ([`PURGE_DELAY_MS`]) once per
/// process; an option set in the environment keeps its value. Called by
/// [`Engine::open`].
pub(crate) fn tune_allocator() {
    #[cfg(feature = "mimalloc")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mimalloc reads its options from the environment when the
        // process starts; `mi_option_set_default` changes the value of an
        // option the environment did not set (one word store, once).
        ONCE.call_once(|| unsafe {
            libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        });
    }
}

/// Gives the memory freed so far back to the system at once (mimalloc
/// keeps it for [`PURGE_DELAY_MS`] otherwise).
pub(crate) fn release_freed_memory() {
    // SAFETY: a collection of the calling thread's heap and of the pending
    // purges; callable at any time.
    #[cfg(feature = "mimalloc")]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// mimalloc's current value of its purge delay (tests).
#[cfg(all(test, feature = "mimalloc"))]
fn purge_delay_ms() -> std::ffi::c_long {
    // SAFETY: reads an option's value.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

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

#[cfg(all(test, feature = "mimalloc"))]
mod allocator_tests {
    use std::process::Command;

    /// Run by the test below in a child process (mimalloc reads the
    /// environment when the process starts): prints the purge delay in
    /// force after the engine's tuning.
    #[test]
    fn purge_delay_child() {
        if std::env::var_os("RINGQ_PURGE_DELAY_CHILD").is_none() {
            return;
        }
        super::tune_allocator();
        println!("purge_delay={}", super::purge_delay_ms());
    }

    fn child(env: Option<&str>) -> String {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["allocator_tests::purge_delay_child", "--exact", "--nocapture", "--test-threads=1"]);
        cmd.env("RINGQ_PURGE_DELAY_CHILD", "1");
        match env {
            Some(v) => cmd.env("MIMALLOC_PURGE_DELAY", v),
            None => cmd.env_remove("MIMALLOC_PURGE_DELAY"),
        };
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.split_once("purge_delay=") {
            Some((_, rest)) => rest.chars().take_while(char::is_ascii_digit).collect(),
            None => text,
        }
    }

    #[test]
    fn the_engine_keeps_freed_memory_a_second_unless_the_environment_says_otherwise() {
        assert_eq!(child(None), super::PURGE_DELAY_MS.to_string());
        // The index names mimalloc's purge delay: the variable's value is
        // what it reads back, and the tuning leaves it alone.
        assert_eq!(child(Some("4321")), "4321");
    }
}
