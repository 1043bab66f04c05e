//! keelson-scheduler: pod placement as pure filter and score functions over a snapshot.
//!
//! Not built yet — see the controllers and scheduler issue. This crate holds only this doc.
