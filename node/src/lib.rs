//! keelson-node: the kubelet (runc/crun, CNI, images, probes, volumes, streaming), the
//! service proxy, cluster DNS and simulated nodes.
//!
//! Built so far: [`simulate`], simulated nodes in the manner of KWOK — many fake Nodes,
//! each with a Lease, whose pods "run" without containers (how keelson benchmarks its
//! scheduler and tests its controllers). The real kubelet comes later in this crate.

pub mod dns;
pub mod kubelet;
pub mod proxy;
mod reflect;
pub mod simulate;
pub mod storage;
