//! keelson-node: the kubelet (runc/crun, CNI, images, probes, volumes, streaming), the
//! service proxy, cluster DNS and simulated nodes.
//!
//! Not built yet — see the node issue. This crate holds only this doc.
