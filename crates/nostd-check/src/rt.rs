//! The bare-metal runtime for the `panic = "abort"` build: what std and libc would otherwise
//! provide. Everything here is what a microcontroller port provides too, in its own way.
//!
//! - `_start`, the process entry point (no crt1.o: we link with `-nostartfiles`);
//! - the exit and write system calls (no libc: `-nostdlib`);
//! - `#[panic_handler]` (no std); each binary brings its own `#[global_allocator]`
//!   (`bump.rs` for nostd-check, a linked-list heap for device_skeleton);
//! - `rust_eh_personality` and `_Unwind_Resume`, which the prebuilt `core`/`alloc` reference;
//! - `syscall` and `__errno_location`, the only libc symbols getrandom 0.2 calls on Linux.
//!
//! Both binaries of the crate use it (`src/bin/device_skeleton.rs` through `#[path]`). With
//! `bump.rs` and the skeleton's `port.rs` it is the only code in the crate with unsafe blocks;
//! each says why it holds. The process is single-threaded.

use core::arch::{asm, naked_asm};
use core::ffi::{c_int, c_long};
use core::fmt::{self, Write as _};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicI32, Ordering::Relaxed};

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

/// Runs the binary's `entry` (each binary of this crate defines one) and exits with its code.
extern "C" fn start_rust() -> ! {
    exit(crate::entry())
}

/// Ends the process (Linux `exit_group`, system call 231).
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes one integer argument, touches no memory of ours and does not
    // return.
    unsafe {
        asm!("syscall", in("rax") 231, in("rdi") code, options(noreturn, nostack));
    }
}

/// Writes to a file descriptor (Linux `write`, system call 1). Returns bytes written or -errno.
pub(crate) fn write(fd: i32, bytes: &[u8]) -> isize {
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
pub(crate) struct Fd(pub(crate) i32);

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
