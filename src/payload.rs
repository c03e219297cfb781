//! [`Payload`]: a message's bytes, shared without a copy by the ring, the
//! deliveries and the snapshot images.
//!
//! A payload is one word, in one of two forms:
//!
//! - **Heap**: an `Arc<[u8]>`-like allocation behind a thin pointer, holding
//!   the reference count, the length and the bytes. `Arc<[u8]>` is a
//!   two-word (fat) pointer, and every slot of the slab holds one, so this
//!   makes each message 8 bytes smaller: 88 → 80 bytes, about 8 MB per
//!   million messages held. The allocation's header is 8 bytes (a 32-bit
//!   count and a 32-bit length; a payload is at most 64 MiB) where an
//!   `Arc<[u8]>`'s is 16: a 100-byte payload then fits mimalloc's 112-byte
//!   size class instead of the 128-byte one, 16 MB less per million.
//! - **Mapped**: a pointer into a snapshot file mapped read-only
//!   ([`MappedFile`]), at the 32-bit little-endian length that precedes the
//!   bytes there (the snapshot's own encoding). Opening a queue leaves the
//!   payloads of its snapshot where they are instead of copying each into
//!   the heap: they cost no memory of the process until read, and the
//!   pages read are page cache the kernel may reclaim (a million 100-byte
//!   messages: about 112 MB less RSS after a reopen). The lowest bit of
//!   the word tells the forms apart: a heap allocation is 4-aligned, so its
//!   address never has it, whatever tag bits the allocator puts at the top.
//!
//! A mapped payload has no count of its own: its file's region counts the
//! payloads pointing into it, and is unmapped when that count and the
//! [`MappedFile`] handles are all gone. The region is found without a
//! lock: a mapped payload's word is `1 | address << 1 | index << 49`, the
//! index of its region in a fixed table of [`REGIONS`] entries (one per
//! snapshot file some payload points into: one per queue opened from a
//! snapshot while its messages live, and one per `inspect` result held).
//! An address of more than 48 bits, or a full table, gets heap copies
//! instead.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering, fence};

#[repr(C)]
struct Header {
    count: AtomicU32,
    len: u32,
}

/// Immutable shared bytes (see the module docs).
pub struct Payload {
    ptr: NonNull<u8>,
}

// SAFETY: the bytes are immutable once written (heap) or read-only mapped
// (mapped), and the counts are atomic, as for `Arc<[u8]>`.
unsafe impl Send for Payload {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for Payload {}

/// As `Arc`: a count past this means a leak of clones (`mem::forget`); far
/// below `u32::MAX`, so the check comes before any wrap.
const MAX_COUNT: u32 = i32::MAX as u32;

const _: () = assert!(usize::BITS == 64, "a mapped payload's word needs 64-bit pointers");

/// The bit of the word that marks a mapped payload.
const MAPPED: usize = 1;

/// The addresses a mapped payload's word can hold (48 bits).
const ADDRESS: usize = (1 << 48) - 1;

/// Where a mapped payload's word keeps its region's index, above the
/// tag bit and the address.
const REGION_SHIFT: u32 = 49;

/// How many mapped files payloads may point into at once.
pub const REGIONS: usize = 64;

/// The length prefix before a mapped payload's bytes.
const PREFIX: usize = 4;

/// How many bytes of a file's payloads are read between two releases of
/// its pages ([`MappedFile::note_read`]).
pub const RELEASE_READ: usize = 8 << 20;

/// The two forms, with the tag taken off.
enum Form {
    Heap(NonNull<Header>),
    /// The length prefix, and the index of its region.
    Mapped(*const u8, usize),
}

impl Payload {
    fn layout(len: usize) -> Layout {
        let (layout, offset) = Layout::new::<Header>()
            .extend(Layout::array::<u8>(len).expect("payload length fits a layout"))
            .expect("payload length fits a layout");
        debug_assert_eq!(offset, std::mem::size_of::<Header>());
        layout.pad_to_align()
    }

    fn form(&self) -> Form {
        let p = self.ptr.as_ptr();
        let word = p.addr();
        if word & MAPPED == 0 {
            Form::Heap(self.ptr.cast())
        } else {
            let index = word >> REGION_SHIFT;
            Form::Mapped(p.map_addr(|w| (w >> 1) & ADDRESS).cast_const(), index)
        }
    }

    /// Whether the bytes are in a mapped file ([`MappedFile`]), not the heap.
    pub fn is_mapped(&self) -> bool {
        matches!(self.form(), Form::Mapped(..))
    }

    /// Hints the CPU to bring the header and the first bytes into cache
    /// (a checkout reads them soon after; see `ring::prefetch`).
    pub(crate) fn prefetch(&self) {
        match self.form() {
            Form::Heap(h) => crate::ring::prefetch(h.as_ptr().cast()),
            Form::Mapped(p, _) => crate::ring::prefetch(p),
        }
    }

    /// A new payload holding a copy of `bytes` (at most 4 GiB; the engine
    /// refuses payloads over 64 MiB before they get here).
    pub fn new(bytes: &[u8]) -> Payload {
        let len = u32::try_from(bytes.len()).expect("a payload of at most 4 GiB");
        let layout = Self::layout(bytes.len());
        // SAFETY: the layout has a non-zero size (the header).
        let raw = unsafe { alloc(layout) }.cast::<Header>();
        let Some(ptr) = NonNull::new(raw) else { handle_alloc_error(layout) };
        debug_assert_eq!(raw.addr() & MAPPED, 0, "the header is 4-aligned");
        // SAFETY: `raw` is a fresh allocation of `layout`: a header, then
        // `bytes.len()` bytes at `size_of::<Header>()`.
        unsafe {
            raw.write(Header { count: AtomicU32::new(1), len });
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), Self::data(raw), bytes.len());
        }
        Payload { ptr: ptr.cast() }
    }

    /// The same bytes in the heap (a copy if mapped, a clone if not).
    pub fn to_heap(&self) -> Payload {
        match self.form() {
            Form::Heap(_) => self.clone(),
            Form::Mapped(..) => Payload::new(self.as_slice()),
        }
    }

    fn data(header: *mut Header) -> *mut u8 {
        // SAFETY (of the callers' use): the bytes follow the header in the
        // same allocation.
        unsafe { header.cast::<u8>().add(std::mem::size_of::<Header>()) }
    }

    /// The header of this payload's allocation (`h` is its heap form).
    fn heap_header(&self, h: NonNull<Header>) -> &Header {
        // SAFETY: the allocation lives while this payload points to it.
        unsafe { h.as_ref() }
    }

    /// The region of this payload's mapped form (`index` from its word):
    /// the entry was set before this payload was made and stays set,
    /// pointing to a live region, while any payload points into it.
    fn region_ptr(&self, index: usize) -> *const Region {
        TABLE[index].load(Ordering::Acquire)
    }

    fn region(&self, index: usize) -> &Region {
        // SAFETY: see `region_ptr`; this payload keeps the region alive.
        unsafe { &*self.region_ptr(index) }
    }

    /// A handle on the file a mapped payload points into (`None` for a
    /// heap one).
    pub fn mapped_file(&self) -> Option<MappedFile> {
        let Form::Mapped(_, index) = self.form() else { return None };
        self.region(index).live.fetch_add(1, Ordering::Relaxed);
        let region = NonNull::new(self.region_ptr(index).cast_mut()).expect("a live entry");
        Some(MappedFile { region })
    }

    /// Whether both are the same bytes in the same place (one allocation,
    /// or the same spot of one mapped file).
    pub fn ptr_eq(&self, other: &Payload) -> bool {
        self.ptr == other.ptr
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self.form() {
            Form::Heap(h) => {
                let len = self.heap_header(h).len as usize;
                // SAFETY: `len` initialized bytes follow the header,
                // immutable while this payload lives.
                unsafe { std::slice::from_raw_parts(Self::data(h.as_ptr()), len) }
            }
            // SAFETY: a mapped payload points at a length prefix followed by
            // that many bytes inside a read-only mapping that stays mapped
            // while the payload lives (its region counts it).
            Form::Mapped(p, _) => unsafe {
                let len = u32::from_le_bytes(p.cast::<[u8; PREFIX]>().read_unaligned()) as usize;
                std::slice::from_raw_parts(p.add(PREFIX), len)
            },
        }
    }

    /// How many payloads share these bytes (tests): for a mapped payload,
    /// how many point into its file, plus one while its [`MappedFile`] is
    /// open.
    pub fn strong_count(&self) -> usize {
        match self.form() {
            Form::Heap(h) => self.heap_header(h).count.load(Ordering::Acquire) as usize,
            Form::Mapped(_, index) => self.region(index).live.load(Ordering::Acquire),
        }
    }
}

/// A file mapped read-only, and how many handles keep it mapped: the
/// payloads pointing into it and its [`MappedFile`]s.
struct Region {
    map: memmap2::Mmap,
    live: AtomicUsize,
    /// Its entry in [`TABLE`], if it got one.
    index: Option<usize>,
    /// Bytes of its payloads read since its pages were last released
    /// ([`MappedFile::note_read`]).
    read: AtomicUsize,
}

/// Held by the unit tests that fill [`TABLE`] or expect a free entry
/// (tests of one binary run on threads of one process).
#[cfg(test)]
pub(crate) static TABLE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The regions payloads point into, by the index their words carry.
static TABLE: [AtomicPtr<Region>; REGIONS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; REGIONS];

/// Drops one handle on the region at `region`; the last one clears its
/// entry and unmaps it.
///
/// # Safety
/// `region` is a live region the caller holds a handle on, given up here.
unsafe fn release(region: *const Region) {
    // SAFETY: the caller's handle keeps it alive until the decrement.
    if unsafe { &*region }.live.fetch_sub(1, Ordering::Release) != 1 {
        return;
    }
    // As `Arc::drop`: everything done through the other handles happens
    // before the unmap. No handle is left, so none can be made.
    fence(Ordering::Acquire);
    // SAFETY: the last handle: nothing else refers to it.
    let region = unsafe { Box::from_raw(region.cast_mut()) };
    if let Some(i) = region.index {
        TABLE[i].store(std::ptr::null_mut(), Ordering::Release);
    }
    drop(region);
}

/// A snapshot file mapped read-only that payloads may point into
/// ([`MappedFile::payload`]) instead of holding copies. The file must not
/// change while mapped: ringq writes snapshots under another name, renames
/// them into place and only ever removes them whole (a removed file stays
/// readable while mapped; its disk space returns when the mapping goes).
/// The mapping lasts while a `MappedFile` or a payload pointing into it
/// lives.
pub struct MappedFile {
    region: NonNull<Region>,
}

// SAFETY: the region is read-only but for its atomic count.
unsafe impl Send for MappedFile {}
// SAFETY: as above.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Takes `map` so payloads can point into it.
    pub fn new(map: memmap2::Mmap) -> MappedFile {
        let region =
            Box::into_raw(Box::new(Region { map, live: AtomicUsize::new(1), index: None, read: AtomicUsize::new(0) }));
        for (i, entry) in TABLE.iter().enumerate() {
            // SAFETY: not shared until the exchange below succeeds.
            unsafe { (*region).index = Some(i) };
            if entry.compare_exchange(std::ptr::null_mut(), region, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return MappedFile { region: NonNull::new(region).expect("boxed") };
            }
        }
        // A full table: payloads of this file are heap copies.
        // SAFETY: still not shared.
        unsafe { (*region).index = None };
        MappedFile { region: NonNull::new(region).expect("boxed") }
    }

    fn region(&self) -> &Region {
        // SAFETY: this handle keeps the region alive.
        unsafe { self.region.as_ref() }
    }

    /// How many payloads point into the file (and clones of this handle,
    /// which are short-lived).
    pub fn payloads(&self) -> usize {
        self.region().live.load(Ordering::Acquire).saturating_sub(1)
    }

    /// The mapped bytes.
    pub fn map(&self) -> &memmap2::Mmap {
        &self.region().map
    }

    /// A payload of `bytes`, which must be a slice of this mapping preceded
    /// in it by its length as a 32-bit little-endian integer; it points
    /// into the mapping. A heap copy when `bytes` is empty (nothing to
    /// share), the address is above 48 bits or the table of regions was
    /// full.
    ///
    /// # Panics
    /// If `bytes` is not such a slice.
    pub fn payload(&self, bytes: &[u8]) -> Payload {
        let region = self.region();
        let (base, len) = (region.map.as_ptr().addr(), region.map.len());
        let at = bytes.as_ptr().addr();
        assert!(
            at >= base + PREFIX && at.saturating_add(bytes.len()) <= base + len,
            "a mapped payload outside its file"
        );
        // The prefix through the mapping's own pointer (`bytes` covers only
        // the bytes).
        let start = region.map.as_ptr().wrapping_add(at - base - PREFIX);
        // SAFETY: `start..start + PREFIX` is inside the mapping (checked above).
        let prefix = unsafe { start.cast::<[u8; PREFIX]>().read_unaligned() };
        assert_eq!(u32::from_le_bytes(prefix) as usize, bytes.len(), "a mapped payload without its length prefix");
        let Some(index) = region.index else { return Payload::new(bytes) };
        if bytes.is_empty() || start.addr() & !ADDRESS != 0 {
            return Payload::new(bytes);
        }
        region.live.fetch_add(1, Ordering::Relaxed);
        let tagged = start.cast_mut().map_addr(|a| MAPPED | (a << 1) | (index << REGION_SHIFT));
        Payload { ptr: NonNull::new(tagged).expect("tagged words are not null") }
    }

    /// Counts `bytes` of this file's payloads read (delivered); true once
    /// [`RELEASE_READ`] bytes were read since the last time it said so,
    /// when the caller should [`release_pages`](Self::release_pages) so
    /// that pages read once do not pile up in the process's memory.
    pub fn note_read(&self, bytes: usize) -> bool {
        let read = &self.region().read;
        if read.fetch_add(bytes, Ordering::Relaxed) + bytes < RELEASE_READ {
            return false;
        }
        read.store(0, Ordering::Relaxed);
        true
    }

    /// Drops `len` bytes of the mapping's pages from `offset` from this
    /// process (the payloads stay valid: a page read again is faulted back
    /// in from the unchanging file), so pages read once do not stay in its
    /// memory (RSS). They stay in the page cache.
    pub fn release_pages(&self, offset: usize, len: usize) {
        let map = &self.region().map;
        let page = crate::journal::PAGE;
        let start = offset / page * page;
        let end = offset.saturating_add(len).min(map.len());
        if end > start {
            // SAFETY: the range is inside the mapping and starts on a page.
            // On a shared read-only file mapping the advice changes no
            // contents: a page read again is faulted back in from the
            // (unchanging) file, so the payloads that point into it stay
            // valid.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }
}

impl Clone for MappedFile {
    fn clone(&self) -> MappedFile {
        self.region().live.fetch_add(1, Ordering::Relaxed);
        MappedFile { region: self.region }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: this handle is given up here.
        unsafe { release(self.region.as_ptr()) };
    }
}

impl fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedFile").field("len", &self.map().len()).field("payloads", &self.payloads()).finish()
    }
}

impl Clone for Payload {
    fn clone(&self) -> Payload {
        // Relaxed, as `Arc::clone`: a new reference comes from an existing one.
        let before = match self.form() {
            Form::Heap(h) => self.heap_header(h).count.fetch_add(1, Ordering::Relaxed) as usize,
            Form::Mapped(_, index) => self.region(index).live.fetch_add(1, Ordering::Relaxed),
        };
        if before > MAX_COUNT as usize {
            std::process::abort();
        }
        Payload { ptr: self.ptr }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        match self.form() {
            Form::Heap(h) => {
                let header = self.heap_header(h);
                // As `Arc::drop`: release, and the last one acquires before freeing.
                if header.count.fetch_sub(1, Ordering::Release) != 1 {
                    return;
                }
                fence(Ordering::Acquire);
                let layout = Self::layout(header.len as usize);
                // SAFETY: this was the last reference to an allocation of `layout`.
                unsafe { dealloc(h.as_ptr().cast(), layout) };
            }
            // SAFETY: this payload's handle is given up here.
            Form::Mapped(_, index) => unsafe { release(self.region_ptr(index)) },
        }
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
        clone_on_threads(&p, 1);
        assert_eq!(p.strong_count(), 1);
    }

    /// 8 threads each make and drop `rounds` × 1000 clones of `p` at once.
    fn clone_on_threads(p: &Payload, rounds: usize) {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        let mine: Vec<Payload> = (0..1000).map(|_| p.clone()).collect();
                        assert!(mine.iter().all(|m| &**m == b"shared by many threads"));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    /// Clones of a mapped payload made and dropped on many threads at once
    /// are counted exactly: the file stays mapped until the last is gone.
    #[test]
    fn mapped_clones_across_threads_unmap_once() {
        let _table = TABLE_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let mut bytes = 22u32.to_le_bytes().to_vec();
        bytes.extend(b"shared by many threads");
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a file of this test's own that nothing changes.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }.unwrap();
        let mapped = MappedFile::new(map);
        let p = mapped.payload(&mapped.map()[4..]);
        assert!(p.is_mapped());
        drop(mapped);
        clone_on_threads(&p, 10);
        assert_eq!(p.strong_count(), 1);
        let maps = || std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(maps().contains(path.to_str().unwrap()));
        drop(p);
        assert!(!maps().contains(path.to_str().unwrap()));
    }
}
