//! keelson-api: the HTTPS Kubernetes REST API over the store.
//!
//! Not built yet — see the "kubectl over HTTPS" issue. This crate holds only this doc.
