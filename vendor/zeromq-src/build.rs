//! Not in the release: libzmq's sources are compiled by the crate that calls `Build::build`,
//! so without this an edit to them (config.hpp, options.cpp) would not rebuild libzmq.
fn main() {
    println!("cargo:rerun-if-changed=vendor");
}
