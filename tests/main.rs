//! Integration tests: the real `troupe-agent` and `troupe` binaries, driven over real sockets,
//! by the stock Python Circus clients and by raw ZeroMQ frames. One binary, so it links once.

mod announce;
mod broadcast;
mod circusctl;
mod cli;
mod cluster_e2e;
mod configure;
mod discovery;
mod first_hour;
mod raw_frames;
mod remote_exec;
mod security;
mod shell;
mod soak;
mod stats;
mod supervision;
mod support;
