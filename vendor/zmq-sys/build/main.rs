//! Builds libzmq 4.3.4 from zeromq-src with CURVE: libsodium comes from libsodium-sys-stable,
//! which built it from source before this script runs (see README.md for why this patch
//! exists). The changes from zmq-sys 0.12.0's build script: `with_libsodium(Some(..))`,
//! eventfd mailboxes on Linux, and libzmq's own compiler warnings silenced: as a path
//! dependency this crate's build output is shown on every build, and nothing here can act on
//! warnings in libzmq's C++.

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
    let mut cxxflags = env::var("CXXFLAGS").unwrap_or_else(|_| "-w".to_string());
    // zeromq-src leaves eventfd off on Linux, so every ZeroMQ socket's mailbox was a
    // socketpair: two descriptors and a unix-socket send per signal instead of one eventfd
    // (troupe serve holds three sockets per member: 9 descriptors a member, 6 with eventfd).
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        cxxflags.push_str(" -DZMQ_HAVE_EVENTFD -DZMQ_HAVE_EVENTFD_CLOEXEC");
    }
    env::set_var("CXXFLAGS", cxxflags);
    let sodium = zeromq_src::LibLocation::new(dep("DEP_SODIUM_LIB"), dep("DEP_SODIUM_INCLUDE"));
    zeromq_src::Build::new().with_libsodium(Some(sodium)).build();
}
