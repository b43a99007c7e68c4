//! The bare-metal runtime for the `panic = "abort"` build: what std and libc would otherwise
//! provide. Everything here is what a microcontroller port provides too, in its own way.
//!
//! - `_start`, the process entry point (no crt1.o: we link with `-nostartfiles`);
//! - the exit and write system calls (no libc: `-nostdlib`);
//! - `#[panic_handler]` and `#[global_allocator]` (no std);
//! - `rust_eh_personality` and `_Unwind_Resume`, which the prebuilt `core`/`alloc` reference;
//! - `syscall` and `__errno_location`, the only libc symbols getrandom 0.2 calls on Linux.
//!
//! This module is the only place in the crate with unsafe code. Each unsafe block says why it
//! holds. The process is single-threaded.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, naked_asm};
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_long};
use core::fmt::{self, Write as _};
use core::panic::PanicInfo;
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering::Relaxed};

// ---------------------------------------------------------------------------------------------
// Entry and exit

/// The ELF entry point. The kernel jumps here with `rsp` pointing at `argc`, not through a
/// `call`, so there is no return address and no frame: a compiled function's prologue would
/// get the stack alignment wrong. Hence a naked function: clear the frame pointer (outermost
/// frame), align the stack to 16 bytes as the SysV ABI requires at a call, and call Rust.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym start_rust,
    )
}

/// Runs the check, prints the result and exits with 0 (success) or 1 (failure).
extern "C" fn start_rust() -> ! {
    let code = match crate::check() {
        Ok(report) => {
            let _ = Fd(1).write_str(&report);
            let _ = writeln!(
                Fd(1),
                "nostd-check:   heap: peak {} bytes live, {} bytes of the {} byte arena used",
                ALLOCATOR.peak_live.load(Relaxed),
                ALLOCATOR.high_water.load(Relaxed),
                ARENA_SIZE,
            );
            0
        }
        Err(failure) => {
            let _ = Fd(2).write_str(&failure);
            1
        }
    };
    exit(code)
}

/// Ends the process (Linux `exit_group`, system call 231).
fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes one integer argument, touches no memory of ours and does not
    // return.
    unsafe {
        asm!("syscall", in("rax") 231, in("rdi") code, options(noreturn, nostack));
    }
}

/// Writes to a file descriptor (Linux `write`, system call 1). Returns bytes written or -errno.
fn write(fd: i32, bytes: &[u8]) -> isize {
    let ret: isize;
    // SAFETY: write only reads `bytes.len()` bytes from `bytes.as_ptr()`, which the slice
    // guarantees are valid. The syscall instruction clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 1isize => ret,
            in("rdi") fd,
            in("rsi") bytes.as_ptr(),
            in("rdx") bytes.len(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, readonly),
        );
    }
    ret
}

/// `fmt::Write` to a file descriptor: 1 for stdout, 2 for stderr.
struct Fd(i32);

impl fmt::Write for Fd {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            let n = write(self.0, rest);
            if n <= 0 {
                return Err(fmt::Error);
            }
            rest = &rest[n.unsigned_abs()..];
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Panics and unwinding

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let _ = writeln!(Fd(2), "nostd-check: panic: {info}");
    exit(101)
}

/// Referenced by the prebuilt `core`/`alloc`, which were compiled with `panic = "unwind"`.
/// With `panic = "abort"` nothing unwinds, so it is never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Referenced by the prebuilt `core`/`alloc` (see `rust_eh_personality`); never called.
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    exit(134)
}

// ---------------------------------------------------------------------------------------------
// Heap

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

// ---------------------------------------------------------------------------------------------
// Randomness: the libc symbols getrandom 0.2 calls on Linux

/// Linux system call number of `getrandom` on x86_64.
const SYS_GETRANDOM: c_long = 318;
/// `ENOSYS`: function not implemented.
const ENOSYS: c_int = 38;

/// errno. One thread, so one variable (libc keeps one per thread).
static ERRNO: AtomicI32 = AtomicI32::new(0);

/// libc's `int *__errno_location(void)`: where getrandom 0.2 reads errno after a failure.
#[unsafe(no_mangle)]
extern "C" fn __errno_location() -> *mut c_int {
    ERRNO.as_ptr()
}

/// libc's `long syscall(long number, ...)`, which getrandom 0.2 calls as
/// `syscall(SYS_getrandom, buf, len, 0)` for every random byte ring and rustls use (with the
/// `linux_disable_fallback` feature nothing else: no `open("/dev/urandom")`).
///
/// This is this port's RNG seam, the place an MCU port would read its hardware RNG. (On a
/// `target_os = "none"` target, getrandom 0.2 instead calls the function registered with
/// `register_custom_getrandom!`; on Linux it ignores that feature, so the seam is here.) On this
/// host it asks the kernel, so the randomness is real.
///
/// Only `SYS_getrandom` is served; anything else fails with `ENOSYS`. The C declaration is
/// variadic; defining it with fixed `long` parameters is ABI-compatible on x86_64 SysV, where
/// integer arguments travel in the same registers (rdi, rsi, rdx, rcx) either way.
///
/// # Safety
/// For `SYS_getrandom`, `buf` must be valid for writes of `len` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn syscall(number: c_long, buf: c_long, len: c_long, flags: c_long) -> c_long {
    if number != SYS_GETRANDOM {
        ERRNO.store(ENOSYS, Relaxed);
        return -1;
    }
    let ret: c_long;
    // SAFETY: getrandom writes at most `len` bytes to `buf`, which the caller guarantees are
    // writable. The syscall instruction clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_GETRANDOM => ret,
            in("rdi") buf,
            in("rsi") len,
            in("rdx") flags,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // The kernel returns -errno; libc returns -1 and sets errno.
        ERRNO.store(c_int::try_from(-ret).unwrap_or(ENOSYS), Relaxed);
        return -1;
    }
    ret
}
