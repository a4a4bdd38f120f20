//! Builds libzmq 4.3.4 from zeromq-src with CURVE: libsodium comes from libsodium-sys-stable,
//! which built it from source before this script runs (see README.md for why this patch
//! exists). The changes from zmq-sys 0.12.0's build script: `with_libsodium(Some(..))`, and
//! libzmq's own compiler warnings silenced: as a path dependency this crate's build output is
//! shown on every build, and nothing here can act on warnings in libzmq's C++.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");
    let dep = |key: &str| {
        env::var_os(key).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{} is not set: libsodium-sys-stable must be a dependency of zmq-sys", key)
        })
    };
    if env::var_os("CXXFLAGS").is_none() {
        env::set_var("CXXFLAGS", "-w");
    }
    let sodium = zeromq_src::LibLocation::new(dep("DEP_SODIUM_LIB"), dep("DEP_SODIUM_INCLUDE"));
    zeromq_src::Build::new().with_libsodium(Some(sodium)).build();
}
