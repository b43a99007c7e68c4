//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for nostd-check's libc-less link.
//!
//! Rust code (and ring's C code) calls these symbols, which libc normally provides. The
//! nostd-check binary links with `-nostdlib`, so they must come from somewhere else, as on a
//! microcontroller. This crate is `#![no_builtins]` so that LLVM does not turn the loops below
//! back into calls to the very functions they implement.
//!
//! Everything is gated on `cfg(panic = "abort")`: in the workspace's ordinary unwinding builds
//! (where std and libc are linked) this crate is empty and exports nothing.
//!
//! The loops copy one byte at a time: small and obviously right beats fast here.

#![no_std]
#![no_builtins]

#[cfg(panic = "abort")]
mod imp {
    use core::ffi::{c_int, c_void};

    /// C `memcpy`.
    ///
    /// # Safety
    /// `dest` and `src` must be valid for `n` bytes and must not overlap.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(
        dest: *mut c_void,
        src: *const c_void,
        n: usize,
    ) -> *mut c_void {
        let (d, s) = (dest.cast::<u8>(), src.cast::<u8>());
        let mut i = 0;
        while i < n {
            // SAFETY: i < n and the caller guarantees both regions hold n bytes.
            unsafe { *d.add(i) = *s.add(i) };
            i += 1;
        }
        dest
    }

    /// C `memmove`: like `memcpy`, but the regions may overlap.
    ///
    /// # Safety
    /// `dest` and `src` must be valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(
        dest: *mut c_void,
        src: *const c_void,
        n: usize,
    ) -> *mut c_void {
        let (d, s) = (dest.cast::<u8>(), src.cast::<u8>());
        if (d as usize) <= (s as usize) {
            // Copying forwards never overwrites a source byte before it is read.
            let mut i = 0;
            while i < n {
                // SAFETY: i < n and the caller guarantees both regions hold n bytes.
                unsafe { *d.add(i) = *s.add(i) };
                i += 1;
            }
        } else {
            // dest is above src: copy backwards for the same reason.
            let mut i = n;
            while i > 0 {
                i -= 1;
                // SAFETY: i < n and the caller guarantees both regions hold n bytes.
                unsafe { *d.add(i) = *s.add(i) };
            }
        }
        dest
    }

    /// C `memset`.
    ///
    /// # Safety
    /// `dest` must be valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dest: *mut c_void, c: c_int, n: usize) -> *mut c_void {
        let d = dest.cast::<u8>();
        let mut i = 0;
        while i < n {
            // SAFETY: i < n and the caller guarantees the region holds n bytes. C semantics:
            // the value is converted to unsigned char (truncation intended).
            unsafe { *d.add(i) = c as u8 };
            i += 1;
        }
        dest
    }

    /// C `memcmp`: compares as unsigned bytes.
    ///
    /// # Safety
    /// `a` and `b` must be valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
        let (a, b) = (a.cast::<u8>(), b.cast::<u8>());
        let mut i = 0;
        while i < n {
            // SAFETY: i < n and the caller guarantees both regions hold n bytes.
            let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
            if x != y {
                return c_int::from(x) - c_int::from(y);
            }
            i += 1;
        }
        0
    }

    /// `bcmp`: zero if equal, non-zero otherwise (LLVM emits it for `==` on byte slices).
    ///
    /// # Safety
    /// `a` and `b` must be valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
        // SAFETY: same contract as memcmp.
        unsafe { memcmp(a, b, n) }
    }
}
