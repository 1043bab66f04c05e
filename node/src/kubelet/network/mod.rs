//! Pod networking: network namespaces and the CNI plugins that wire them.
//!
//! A sandbox's network is set up in two steps: [`NetNs::create`] makes a named network
//! namespace under `/run/netns`, then [`Cni::add`] runs the CNI plugins (spec 1.0.0) that
//! bring `lo` up, attach a veth to the node's bridge and give it an address from the
//! node's pod CIDR — [`CniResult::pod_ip`] is the pod's IP. Teardown is [`Cni::del`]
//! (which works after the namespace is gone) and [`NetNs::delete`].
//!
//! Start in [`cni`]: [`CniConfig::conflist`] is the whole network configuration. The
//! plugins are the standard ones (`loopback`, `bridge`, `host-local`, from Debian's
//! `containernetworking-plugins`); nothing here touches the host's firewall.

pub mod cni;
pub mod exec;
mod ip;
pub mod link;
pub mod netns;
pub mod result;

pub use cni::{Cni, CniConfig, CniError, PodCniArgs};
pub use exec::{CniCommand, PluginExec, ProcessExec};
pub use ip::IpCommandError;
pub use link::{cleanup_bridge, ensure_bridge, LinkError};
pub use netns::{NetNs, NetNsError};
pub use result::{CniResult, IpNet};
