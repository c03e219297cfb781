//! [`Payload`]: a message's bytes, shared without a copy by the ring, the
//! deliveries and the snapshot images.
//!
//! It is an `Arc<[u8]>` behind a one-word pointer: one allocation holds the
//! reference count, the length and the bytes. `Arc<[u8]>` is a two-word
//! (fat) pointer, and every slot of the slab holds one, so this makes each
//! message 8 bytes smaller: 88 → 80 bytes, about 8 MB per million messages
//! held. The allocation's header is 8 bytes (a 32-bit count and a 32-bit
//! length; a payload is at most 64 MiB) where an `Arc<[u8]>`'s is 16: a
//! 100-byte payload then fits mimalloc's 112-byte size class instead of the
//! 128-byte one, 16 MB less per million such messages.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

#[repr(C)]
struct Header {
    count: AtomicU32,
    len: u32,
}

/// Immutable shared bytes (see the module docs).
pub struct Payload {
    ptr: NonNull<Header>,
}

// SAFETY: the bytes are immutable once written and the count is atomic, as
// for `Arc<[u8]>`.
unsafe impl Send for Payload {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for Payload {}

/// As `Arc`: a count past this means a leak of clones (`mem::forget`); far
/// below `u32::MAX`, so the check comes before any wrap.
const MAX_COUNT: u32 = i32::MAX as u32;

impl Payload {
    fn layout(len: usize) -> Layout {
        let (layout, offset) = Layout::new::<Header>()
            .extend(Layout::array::<u8>(len).expect("payload length fits a layout"))
            .expect("payload length fits a layout");
        debug_assert_eq!(offset, std::mem::size_of::<Header>());
        layout.pad_to_align()
    }

    /// Hints the CPU to bring the header and the first bytes into cache
    /// (a checkout reads them soon after; see `ring::prefetch`).
    pub(crate) fn prefetch(&self) {
        crate::ring::prefetch(self.ptr.as_ptr().cast());
    }

    /// A new payload holding a copy of `bytes` (at most 4 GiB; the engine
    /// refuses payloads over 64 MiB before they get here).
    pub fn new(bytes: &[u8]) -> Payload {
        let len = u32::try_from(bytes.len()).expect("a payload of at most 4 GiB");
        let layout = Self::layout(bytes.len());
        // SAFETY: the layout has a non-zero size (the header).
        let raw = unsafe { alloc(layout) }.cast::<Header>();
        let Some(ptr) = NonNull::new(raw) else { handle_alloc_error(layout) };
        // SAFETY: `raw` is a fresh allocation of `layout`: a header, then
        // `bytes.len()` bytes at `size_of::<Header>()`.
        unsafe {
            raw.write(Header { count: AtomicU32::new(1), len });
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), Self::data(raw), bytes.len());
        }
        Payload { ptr }
    }

    fn data(header: *mut Header) -> *mut u8 {
        // SAFETY (of the callers' use): the bytes follow the header in the
        // same allocation.
        unsafe { header.cast::<u8>().add(std::mem::size_of::<Header>()) }
    }

    fn header(&self) -> &Header {
        // SAFETY: the allocation lives while any `Payload` points to it.
        unsafe { self.ptr.as_ref() }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        let len = self.header().len as usize;
        // SAFETY: `len` initialized bytes follow the header, immutable
        // while this payload lives.
        unsafe { std::slice::from_raw_parts(Self::data(self.ptr.as_ptr()), len) }
    }

    /// How many payloads share these bytes (tests).
    pub fn strong_count(&self) -> usize {
        self.header().count.load(Ordering::Acquire) as usize
    }
}

impl Clone for Payload {
    fn clone(&self) -> Payload {
        // Relaxed, as `Arc::clone`: a new reference comes from an existing one.
        if self.header().count.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        Payload { ptr: self.ptr }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // As `Arc::drop`: release, and the last one acquires before freeing.
        if self.header().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let layout = Self::layout(self.header().len as usize);
        // SAFETY: this was the last reference to an allocation of `layout`.
        unsafe { dealloc(self.ptr.as_ptr().cast(), layout) };
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        Payload::new(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload::new(&bytes)
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(bytes: &[u8; N]) -> Payload {
        Payload::new(bytes)
    }
}

impl Default for Payload {
    fn default() -> Payload {
        Payload::new(&[])
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_one_word_and_keeps_its_bytes() {
        assert_eq!(std::mem::size_of::<Payload>(), 8);
        assert_eq!(std::mem::size_of::<Option<Payload>>(), 8);
        for len in [0usize, 1, 7, 8, 100, 4096, 100_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = Payload::new(&bytes);
            assert_eq!(&*p, &bytes[..]);
            assert_eq!(p.len(), len);
            let q = p.clone();
            assert_eq!((p.strong_count(), q.strong_count()), (2, 2));
            drop(p);
            assert_eq!(q.strong_count(), 1);
            assert_eq!(&*q, &bytes[..]);
        }
    }

    #[test]
    fn a_100_byte_payload_takes_108_bytes() {
        assert_eq!(Payload::layout(100).size(), 108);
        assert_eq!(std::mem::size_of::<Header>(), 8);
    }

    #[test]
    fn clones_shared_across_threads_free_once() {
        let p = Payload::new(b"shared by many threads");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mine: Vec<Payload> = (0..1000).map(|_| p.clone()).collect();
                    assert!(mine.iter().all(|m| &**m == b"shared by many threads"));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(p.strong_count(), 1);
    }
}
