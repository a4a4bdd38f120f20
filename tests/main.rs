//! Integration tests: the real `troupe-agent` and `troupe` binaries, driven over real sockets,
//! by the stock Python Circus clients and by raw ZeroMQ frames. One binary, so it links once.

mod announce;
mod broadcast;
mod circus_ini;
mod circusctl;
mod cli;
mod cluster_e2e;
mod completions;
mod configure;
mod dashboard;
mod debian;
mod discovery;
mod exit_codes;
mod faults;
mod first_hour;
mod logs;
mod metrics;
mod missing_program;
mod partitions;
mod raw_frames;
mod remote_exec;
mod scale;
mod scripts;
mod security;
mod shell;
mod soak;
mod stats;
mod supervision;
mod support;
mod swarm;
mod systemd;
mod walkthrough;
