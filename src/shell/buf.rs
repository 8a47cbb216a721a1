//! Page-aligned I/O buffers, owned and passed by value through io_uring.
//!
//! O_DIRECT needs the memory address (not only the offset and length) to be
//! aligned to the device's logical block size; a `Vec<u8>` is not (measured:
//! address % 512 = 80, EINVAL). Buffers come from a per-thread pool of
//! power-of-two size classes so the data path allocates nothing per request
//! once warm.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

/// Alignment of every buffer: one page, which satisfies any logical block size.
pub const ALIGN: usize = 4096;

/// Smallest size class.
const CLASS_MIN_BYTES: usize = 4096;
/// Size classes 4 KiB .. 64 MiB.
const CLASSES: usize = 15;
/// Buffers kept per class; small classes serve QD32 on several connections.
const POOL_KEEP_SMALL: usize = 256;
const POOL_KEEP_LARGE: usize = 16;

/// A heap buffer aligned to [`ALIGN`], with a capacity and an initialised length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of at least `bytes` capacity, from the pool when one is free.
    /// The length is set to 0; callers fill it by reading into it.
    pub fn with_capacity(bytes: usize) -> AlignedBuf {
        let class = class_of(bytes);
        if let Some(mut buf) = POOL.with(|p| p.borrow_mut().get_mut(class).and_then(Vec::pop)) {
            buf.len = 0;
            return buf;
        }
        let cap = class_bytes(class).max(round_up(bytes.max(1), ALIGN));
        let layout = Layout::from_size_align(cap, ALIGN).expect("buffer layout is valid");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, cap, len: 0 }
    }

    /// A buffer without memory: what a pooled [`SharedBuf`] holds between uses.
    const fn empty() -> AlignedBuf {
        AlignedBuf {
            ptr: NonNull::dangling(),
            cap: 0,
            len: 0,
        }
    }

    /// A zero-filled buffer of exactly `bytes` initialised bytes.
    pub fn zeroed(bytes: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::with_capacity(bytes);
        buf.as_full_mut()[..bytes].fill(0);
        buf.len = bytes;
        buf
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Mark the first `len` bytes as holding data.
    ///
    /// # Panics
    /// If `len` exceeds the capacity (a caller bug).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "set_len {len} beyond capacity {}", self.cap);
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `cap` bytes, all initialised (alloc_zeroed),
        // and `len <= cap`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole capacity, regardless of the initialised length.
    pub fn as_full_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; every byte was zeroed at allocation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// Give the buffer back to this thread's pool instead of freeing it.
    pub fn recycle(self) {
        let class = class_of(self.cap);
        if self.cap == 0 || class_bytes(class) != self.cap {
            return; // an odd size from `with_capacity` beyond the last class
        }
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            let keep = if class <= 8 { POOL_KEEP_SMALL } else { POOL_KEEP_LARGE };
            if let Some(list) = pool.get_mut(class) {
                if list.len() < keep {
                    list.push(self);
                }
            }
        });
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap == 0 {
            return; // `empty`: nothing was allocated
        }
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("buffer layout is valid");
        // SAFETY: allocated in `with_capacity` with this exact layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

// SAFETY: the pointer is stable for the buffer's life (it never reallocates),
// `bytes_init <= bytes_total`, and the memory is owned exclusively.
unsafe impl tokio_uring::buf::IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.cap
    }
}

// SAFETY: as above; `set_init` only grows the initialised length within capacity.
unsafe impl tokio_uring::buf::IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len {
            self.len = pos.min(self.cap);
        }
    }
}

thread_local! {
    static POOL: RefCell<Vec<Vec<AlignedBuf>>> = RefCell::new((0..CLASSES).map(|_| Vec::new()).collect());
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn class_of(bytes: usize) -> usize {
    let mut class = 0;
    while class + 1 < CLASSES && class_bytes(class) < bytes {
        class += 1;
    }
    class
}

fn class_bytes(class: usize) -> usize {
    CLASS_MIN_BYTES << class
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_recycled() {
        let mut a = AlignedBuf::with_capacity(5000);
        assert_eq!(a.as_full_mut().as_ptr() as usize % ALIGN, 0);
        assert_eq!(a.capacity(), 8192);
        a.as_full_mut()[0] = 7;
        let addr = a.as_full_mut().as_ptr() as usize;
        a.recycle();
        let mut b = AlignedBuf::with_capacity(8000);
        assert_eq!(b.as_full_mut().as_ptr() as usize, addr);
        assert!(b.is_empty());
    }

    #[test]
    fn zeroed_is_zero_even_when_recycled_dirty() {
        let mut a = AlignedBuf::with_capacity(4096);
        a.as_full_mut().fill(0xff);
        a.recycle();
        let z = AlignedBuf::zeroed(4096);
        assert!(z.as_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn shared_buffers_come_back_whole_and_reuse_their_rc() {
        let mut a = AlignedBuf::with_capacity(4096);
        a.as_full_mut()[..3].copy_from_slice(b"abc");
        a.set_len(3);
        let shared = SharedBuf::new(a);
        let other = shared.clone();
        // Not the last reference: nothing goes back yet.
        shared.recycle();
        assert_eq!(other.as_slice(), b"abc");
        let rc_addr = Rc::as_ptr(&other.0) as usize;
        other.recycle();
        let again = SharedBuf::new(AlignedBuf::zeroed(8));
        assert_eq!(Rc::as_ptr(&again.0) as usize, rc_addr);
        assert_eq!(again.as_slice(), &[0; 8]);
    }

    #[test]
    fn huge_requests_get_their_own_size() {
        let a = AlignedBuf::with_capacity(100 << 20);
        assert!(a.capacity() >= 100 << 20);
    }
}

/// A filled buffer shared by several readers at once: a replicated write is
/// written to the local disk and sent to the peer from the same memory.
/// Nobody mutates it while shared, which is what makes handing its pointer
/// to two io_uring operations sound.
#[derive(Clone)]
pub struct SharedBuf(pub Rc<AlignedBuf>);

// SAFETY: the `Rc`'s allocation is stable and never mutated while shared;
// `bytes_init <= bytes_total` as for `AlignedBuf`.
unsafe impl tokio_uring::buf::IoBuf for SharedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.0.as_slice().as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.0.len()
    }
    fn bytes_total(&self) -> usize {
        self.0.len()
    }
}

/// Spare `Rc`s (each holding an empty buffer) kept per thread, so that
/// sharing a buffer costs no allocation once warm.
const SHARED_POOL_KEEP: usize = 256;

thread_local! {
    static SHARED_POOL: RefCell<Vec<Rc<AlignedBuf>>> = const { RefCell::new(Vec::new()) };
}

impl SharedBuf {
    pub fn new(buf: AlignedBuf) -> SharedBuf {
        if let Some(mut rc) = SHARED_POOL.with(|p| p.borrow_mut().pop()) {
            if let Some(slot) = Rc::get_mut(&mut rc) {
                *slot = buf;
                return SharedBuf(rc);
            }
        }
        SharedBuf(Rc::new(buf))
    }

    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// Back to the pool when this was the last reference: the buffer to the
    /// buffers' pool, the `Rc` to its own.
    pub fn recycle(self) {
        let mut rc = self.0;
        if let Some(slot) = Rc::get_mut(&mut rc) {
            std::mem::replace(slot, AlignedBuf::empty()).recycle();
            SHARED_POOL.with(|p| {
                let mut pool = p.borrow_mut();
                if pool.len() < SHARED_POOL_KEEP {
                    pool.push(rc);
                }
            });
        }
    }
}

/// Either kind of buffer, so that one `writev` can carry both.
pub enum WireBuf {
    Owned(AlignedBuf),
    Shared(SharedBuf),
}

// SAFETY: delegates to the two sound implementations above.
unsafe impl tokio_uring::buf::IoBuf for WireBuf {
    fn stable_ptr(&self) -> *const u8 {
        match self {
            WireBuf::Owned(b) => tokio_uring::buf::IoBuf::stable_ptr(b),
            WireBuf::Shared(b) => tokio_uring::buf::IoBuf::stable_ptr(b),
        }
    }
    fn bytes_init(&self) -> usize {
        match self {
            WireBuf::Owned(b) => tokio_uring::buf::IoBuf::bytes_init(b),
            WireBuf::Shared(b) => tokio_uring::buf::IoBuf::bytes_init(b),
        }
    }
    fn bytes_total(&self) -> usize {
        match self {
            WireBuf::Owned(b) => tokio_uring::buf::IoBuf::bytes_total(b),
            WireBuf::Shared(b) => tokio_uring::buf::IoBuf::bytes_total(b),
        }
    }
}

impl WireBuf {
    pub fn recycle(self) {
        match self {
            WireBuf::Owned(b) => b.recycle(),
            WireBuf::Shared(b) => b.recycle(),
        }
    }
}
