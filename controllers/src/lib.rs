//! keelson-controllers: the controllers (kube-runtime based), run only on the Raft leader.
//!
//! Not built yet — see the controllers and scheduler issue. This crate holds only this doc.
