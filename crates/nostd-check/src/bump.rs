//! nostd-check's heap: a bump allocator over a `.bss` arena that counts live bytes and their
//! peak (the binary prints both).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Heap size. The arena lives in .bss: it costs no file size, and the kernel only backs the
/// pages that are touched. Both exchanges need well under 1 MiB at peak.
const ARENA_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: the arena's bytes are only reached through pointers the allocator hands out, and it
// hands out each byte range to one allocation at a time (the atomic `next` below arbitrates).
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));

/// A bump allocator over [`ARENA`]: allocation moves `next` up; freeing the most recent
/// allocation (or shrinking or growing it) moves it back, so the LIFO-heavy patterns of
/// `Vec` growth and temporary buffers reuse memory. Anything else freed stays used until exit,
/// which is fine for a process that runs two handshakes and ends. A long-running device wants
/// a real allocator (e.g. a linked-list or TLSF heap).
///
/// It also counts live bytes and their peak, which the binary prints.
struct BumpAllocator {
    /// Offset of the first free byte in the arena.
    next: AtomicUsize,
    /// Highest `next` ever reached.
    high_water: AtomicUsize,
    /// Bytes currently allocated.
    live: AtomicUsize,
    /// Highest `live` ever reached.
    peak_live: AtomicUsize,
}

#[global_allocator]
static ALLOCATOR: BumpAllocator = BumpAllocator {
    next: AtomicUsize::new(0),
    high_water: AtomicUsize::new(0),
    live: AtomicUsize::new(0),
    peak_live: AtomicUsize::new(0),
};

impl BumpAllocator {
    fn base() -> *mut u8 {
        ARENA.0.get().cast()
    }

    /// Records that `grown` more bytes are live and that the arena is used up to `end`.
    fn account(&self, grown: usize, end: usize) {
        let live = self.live.fetch_add(grown, Relaxed) + grown;
        self.peak_live.fetch_max(live, Relaxed);
        self.high_water.fetch_max(end, Relaxed);
    }
}

// SAFETY: `alloc` returns either null or a block of `layout.size()` bytes aligned to
// `layout.align()` inside the arena that overlaps no live block: blocks are carved from
// `[next, ARENA_SIZE)` and `next` only moves down over a block that is being freed or resized
// and is the last one carved.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = Self::base().addr();
        let mut next = self.next.load(Relaxed);
        loop {
            // Align the absolute address, not the offset: the arena is only 4096-aligned.
            let Some(start) = (base + next)
                .checked_next_multiple_of(layout.align())
                .map(|addr| addr - base)
            else {
                return ptr::null_mut();
            };
            let end = match start.checked_add(layout.size()) {
                Some(end) if end <= ARENA_SIZE => end,
                _ => return ptr::null_mut(),
            };
            match self.next.compare_exchange_weak(next, end, Relaxed, Relaxed) {
                Ok(_) => {
                    self.account(layout.size(), end);
                    // SAFETY: start <= end <= ARENA_SIZE, so the pointer stays in the arena.
                    return unsafe { Self::base().add(start) };
                }
                Err(current) => next = current,
            }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        self.live.fetch_sub(layout.size(), Relaxed);
        // If this was the last block carved, give its bytes back.
        let offset = block.addr() - Self::base().addr();
        let _ = self
            .next
            .compare_exchange(offset + layout.size(), offset, Relaxed, Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let offset = block.addr() - Self::base().addr();
        let old_end = offset + layout.size();
        // The last block carved grows or shrinks in place.
        if let Some(new_end) = offset.checked_add(new_size).filter(|&e| e <= ARENA_SIZE)
            && self
                .next
                .compare_exchange(old_end, new_end, Relaxed, Relaxed)
                .is_ok()
        {
            self.live.fetch_sub(layout.size(), Relaxed);
            self.account(new_size, new_end);
            return block;
        }
        // Otherwise: a new block, copy, free the old one (what the default realloc does).
        // SAFETY: GlobalAlloc::realloc's contract guarantees that `new_size`, rounded up to
        // `layout.align()`, does not overflow isize, so the layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: new_layout has a non-zero size (realloc's contract).
        let new_block = unsafe { self.alloc(new_layout) };
        if !new_block.is_null() {
            // SAFETY: both blocks are live, distinct and at least min(old, new) bytes long.
            unsafe {
                ptr::copy_nonoverlapping(block, new_block, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        new_block
    }
}

/// Peak live bytes, bytes of the arena used, and the arena's size.
pub(crate) fn stats() -> (usize, usize, usize) {
    (
        ALLOCATOR.peak_live.load(Relaxed),
        ALLOCATOR.high_water.load(Relaxed),
        ARENA_SIZE,
    )
}
