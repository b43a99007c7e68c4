//! The port: what a microcontroller supplies to tether, each piece as an MCU would write it,
//! with what stands in for the hardware on this Linux host. docs/PORTING.md explains each.
//!
//! - **Entropy**: [`hardware_rng`], registered with getrandom 0.2's `register_custom_getrandom!`;
//!   ring (and so rustls and tether) draws every random byte through getrandom.
//! - **Monotonic clock**: [`now`], a millisecond tick ([`tick`]) that a timer interrupt would
//!   advance; `TlsSocket` takes it as its [`tether::time::Clock`].
//! - **Wall clock**: [`Rtc`], the calendar time for certificate validity
//!   ([`tether::TimePolicy::Clock`]).
//! - **Heap**: [`HEAP_SIZE`] bytes in a static arena under a linked-list allocator, counted
//!   (live and peak bytes) so the skeleton can print what it used.
//!
//! This module and `rt` are the only places with unsafe code; each block says why it holds.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tether::{Instant, WallClock};

// ---------------------------------------------------------------------------------------------
// Entropy

/// Fills `dest` from the hardware random number generator.
///
/// On an MCU (`target_os = "none"`), getrandom 0.2 calls this for every random byte ring needs
/// (key shares, nonces, the ClientHello random): read the TRNG peripheral here, and fail rather
/// than return weak bytes (`getrandom::Error::UNSUPPORTED` or a custom code) when its health
/// test fails. On this Linux host getrandom ignores registered functions and asks the kernel
/// (through `rt`'s `syscall`), so the stand-in asks getrandom, i.e. the kernel, too.
pub fn hardware_rng(dest: &mut [u8]) -> Result<(), getrandom::Error> {
    #[cfg(target_os = "linux")]
    {
        getrandom::getrandom(dest)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dest;
        compile_error!(
            "device_skeleton: read your hardware RNG in port::hardware_rng (see docs/PORTING.md, Entropy)"
        );
    }
}

// With getrandom's `custom` feature: makes `hardware_rng` the source of every random byte on
// targets getrandom has no backend for (`target_os = "none"`); a no-op on Linux.
getrandom::register_custom_getrandom!(hardware_rng);

// ---------------------------------------------------------------------------------------------
// Clocks

/// Milliseconds since boot. On an MCU the SysTick (or an RTC tick) interrupt adds 1 every
/// millisecond; here the simulated link adds 1 per exchange ([`tick`]).
static TICKS_MS: AtomicU64 = AtomicU64::new(0);

/// Advances the monotonic clock (what the timer interrupt does).
pub fn tick(ms: u64) {
    TICKS_MS.fetch_add(ms, Relaxed);
}

/// The monotonic clock tether's socket reads for its deadlines. A plain `fn() -> Instant` is
/// a [`tether::time::Clock`].
pub fn now() -> Instant {
    Instant::from_millis(TICKS_MS.load(Relaxed))
}

/// The calendar clock for certificate validity: an RTC, GPS or SNTP time on a device. This
/// stand-in starts at a fixed time inside the test certificates' validity
/// (2026-11-22T00:00:00Z) and moves with the tick. A device that has no wall clock yet must
/// return `None` (tether then refuses certificates it cannot date: fail closed).
#[derive(Debug)]
pub struct Rtc;

/// 2026-11-22T00:00:00Z, in seconds since the Unix epoch.
const BOOT_UNIX: u64 = 1_795_305_600;

impl WallClock for Rtc {
    fn unix_seconds(&self) -> Option<u64> {
        Some(BOOT_UNIX + TICKS_MS.load(Relaxed) / 1000)
    }
}

// ---------------------------------------------------------------------------------------------
// Heap

/// The heap. docs/PERFORMANCE.md ("Device RAM") measures one client connection at about
/// 6.3 KiB of heap with 1 KiB records (19 KiB with full 16 KiB records). This skeleton also
/// runs the gateway end of the link in the same heap (its server session, identity and
/// configuration): together they peak at about 11.6 KB live. 24 KiB leaves room for
/// fragmentation; 17 KiB was measured to work and 16 KiB to fail (an allocation finds no free
/// block large enough).
#[cfg(panic = "abort")]
pub const HEAP_SIZE: usize = 24 * 1024;

#[cfg(panic = "abort")]
pub use heap::stats;

#[cfg(panic = "abort")]
mod heap {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

    use linked_list_allocator::LockedHeap;

    use super::HEAP_SIZE;

    #[repr(C, align(16))]
    struct Arena(UnsafeCell<[u8; HEAP_SIZE]>);

    // SAFETY: the arena is only reached through the allocator, which hands each byte range to
    // one allocation at a time (under its spin lock).
    unsafe impl Sync for Arena {}

    static ARENA: Arena = Arena(UnsafeCell::new([0; HEAP_SIZE]));

    /// A linked-list heap over [`ARENA`], set up on first use, counting live and peak bytes.
    struct CountingHeap {
        heap: LockedHeap,
        ready: AtomicBool,
        live: AtomicUsize,
        peak: AtomicUsize,
    }

    #[global_allocator]
    static HEAP: CountingHeap = CountingHeap {
        heap: LockedHeap::empty(),
        ready: AtomicBool::new(false),
        live: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    };

    impl CountingHeap {
        fn init_once(&self) {
            if !self.ready.swap(true, Relaxed) {
                // SAFETY: runs once (the flag), before the first allocation; the arena is a
                // static of HEAP_SIZE bytes that nothing else uses.
                unsafe { self.heap.lock().init(ARENA.0.get().cast(), HEAP_SIZE) };
            }
        }
    }

    // SAFETY: every call is forwarded to linked_list_allocator's `LockedHeap`, which upholds
    // GlobalAlloc's contract; the counters do not touch memory.
    unsafe impl GlobalAlloc for CountingHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.init_once();
            // SAFETY: forwarded with the caller's layout (GlobalAlloc's contract).
            let p = unsafe { self.heap.alloc(layout) };
            if !p.is_null() {
                let live = self.live.fetch_add(layout.size(), Relaxed) + layout.size();
                self.peak.fetch_max(live, Relaxed);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.live.fetch_sub(layout.size(), Relaxed);
            // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc's contract).
            unsafe { self.heap.dealloc(ptr, layout) }
        }
    }

    /// Peak live heap bytes so far, and the heap's size.
    pub fn stats() -> (usize, usize) {
        (HEAP.peak.load(Relaxed), HEAP_SIZE)
    }
}
