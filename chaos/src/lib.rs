//! keelson-chaos: the multi-master cluster harness, faults and history checkers.
//!
//! Not built yet — see the chaos issue. This crate holds only this doc.
