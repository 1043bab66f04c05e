//! keelson-chaos: the multi-master cluster harness, faults, recorded workloads and
//! history checkers behind `keelson cluster` and `keelson chaos run`.
//!
//! It drives the `keelson` binary from outside, like a user: masters are processes (each
//! in its own network namespace where possible), clients talk HTTPS Kubernetes and the
//! etcd v3 endpoint, faults are signals and nftables rules, and every operation and watch
//! delivery is recorded and checked afterwards.

pub mod check;
pub mod cluster;
pub mod fault;
pub mod history;
pub mod report;
pub mod run;
pub mod workload;
