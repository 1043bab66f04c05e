//! The host-side bridge: the CNI bridge plugin creates it on the first ADD and never
//! removes it; node teardown (and tests) do, with [`cleanup_bridge`]. The node makes it
//! itself ([`ensure_bridge`]) before any pod when it serves DNS on the bridge's address.

use std::path::Path;

use super::cni::check_ifname;
use super::ip::{run_ip, IpCommandError};

/// Errors from removing a bridge.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not a valid interface name.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The link exists but is not a bridge; it is left alone.
    #[error("link {name:?} is not a bridge; not deleting it")]
    NotABridge {
        /// The name.
        name: String,
    },
    /// `ip link delete` failed.
    #[error(transparent)]
    Command(#[from] IpCommandError),
}

/// Deletes bridge `name` from the host's network namespace if it exists (`ip link
/// delete NAME`). Returns whether it existed. Refuses links that are not bridges.
#[tracing::instrument]
pub fn cleanup_bridge(name: &str) -> Result<bool, LinkError> {
    check_ifname(name).map_err(|reason| LinkError::InvalidName { name: name.to_string(), reason })?;
    let sys = Path::new("/sys/class/net").join(name);
    if !link_exists(&sys) {
        return Ok(false);
    }
    if !sys.join("bridge").is_dir() {
        return Err(LinkError::NotABridge { name: name.to_string() });
    }
    match run_ip(&["link", "delete", "dev", name]) {
        Ok(_) => {}
        Err(_) if !link_exists(&sys) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!("bridge deleted");
    Ok(true)
}

/// Make bridge `name` with `gateway/prefix_len` and bring it up (what the CNI bridge plugin
/// with `isGateway` would do on its first ADD, which then finds it ready). Idempotent. Only
/// `ip` is asked (not /sys, which shows the namespace that mounted it: an agent started
/// with `nsenter --net` sees the host's /sys); a same-named link that is no bridge makes
/// `ip link set … master`-style use fail later in the CNI plugin with its own error.
#[tracing::instrument]
pub fn ensure_bridge(name: &str, gateway: std::net::IpAddr, prefix_len: u8) -> Result<(), LinkError> {
    check_ifname(name).map_err(|reason| LinkError::InvalidName { name: name.to_string(), reason })?;
    if let Err(e) = run_ip(&["link", "add", "name", name, "type", "bridge"]) {
        // Already there (from an earlier start or the CNI plugin) is fine.
        if run_ip(&["link", "show", "dev", name]).is_err() {
            return Err(e.into());
        }
    }
    // `replace` adds the address or leaves it as it is.
    run_ip(&["addr", "replace", &format!("{gateway}/{prefix_len}"), "dev", name])?;
    run_ip(&["link", "set", "dev", name, "up"])?;
    Ok(())
}

fn link_exists(sys: &Path) -> bool {
    sys.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_non_bridges() {
        assert!(matches!(cleanup_bridge("a/b"), Err(LinkError::InvalidName { .. })));
        assert!(matches!(cleanup_bridge(".."), Err(LinkError::InvalidName { .. })));
        // Loopback exists in every namespace and is no bridge.
        assert!(matches!(cleanup_bridge("lo"), Err(LinkError::NotABridge { .. })));
        assert!(!cleanup_bridge("kt-no-such-br").unwrap());
    }
}
