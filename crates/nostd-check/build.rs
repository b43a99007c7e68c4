//! Link arguments for the `#![no_std]` build: no C runtime, no libc, a static non-PIE binary.
//!
//! They are emitted only when this crate is built with the workspace's `nostd` profile
//! (`panic = "abort"`), the configuration in which `src/main.rs` switches to `#![no_std]` and
//! brings its own `_start`. In every other profile the crate is an ordinary std binary and links
//! normally.
//!
//! Why not `CARGO_CFG_PANIC`? Cargo fills `CARGO_CFG_*` from the target's `rustc --print cfg`,
//! which does not see the profile's `panic` setting: it says "unwind" under the `nostd` profile
//! too. Build scripts are not told the profile's name either (`PROFILE` says "release" for any
//! profile that inherits it), but cargo places every profile's output in a directory named after
//! it: `<target-dir>/[<triple>/]nostd/build/<pkg>-<hash>/out`. If that layout ever changed, the
//! `nostd` build would fail loudly (crt1's `_start` clashes with ours), not silently.
//!
//! The `libc` crate (a dependency of getrandom) asks the linker for `-lc -lm -lrt -lpthread`.
//! With `-static`, those would quietly resolve to glibc's static archives and hide a missing
//! symbol behind half of a libc that was never initialised. So the `nostd` build puts empty
//! archives of those names first on the library path: every symbol the binary needs must come
//! from Rust code, or the link fails and names it.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if !built_with_profile(&out_dir, "nostd") {
        return;
    }
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    let nolibc = out_dir.join("nolibc");
    std::fs::create_dir_all(&nolibc).expect("create OUT_DIR/nolibc");
    for lib in ["c", "m", "rt", "pthread"] {
        // An empty `ar` archive is just its magic line.
        std::fs::write(nolibc.join(format!("lib{lib}.a")), b"!<arch>\n")
            .expect("write an empty archive");
    }
    println!("cargo:rustc-link-search=native={}", nolibc.display());
}

/// True when `out_dir` lies under `<profile>/build/`.
fn built_with_profile(out_dir: &Path, profile: &str) -> bool {
    out_dir.ancestors().any(|dir| {
        dir.file_name().is_some_and(|name| name == "build")
            && dir
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|name| name == profile)
    })
}
