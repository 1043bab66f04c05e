//! NodePorts: a pod asking for host ports fits only nodes where they are free (a port bound
//! on 0.0.0.0 conflicts with the same port on any address).

use crate::{
    framework::{FilterResult, Rejection},
    node_info::NodeInfo,
    pod_info::{HostPort, PodInfo},
};

pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

const ANY_IP: &str = "0.0.0.0";

fn conflicts(used: &[HostPort], want: &HostPort) -> bool {
    used.iter().any(|u| {
        u.port == want.port && u.protocol == want.protocol && (want.ip == ANY_IP || u.ip == ANY_IP || u.ip == want.ip)
    })
}

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if pod.host_ports.iter().any(|p| conflicts(&node.used_ports, p)) {
        Err(Rejection::unschedulable(ERR_REASON))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{framework::Code, testutil::*};
    use k8s_openapi::api::core::v1::{ContainerPort, Pod};

    fn with_port(mut p: Pod, ip: &str, port: i32, proto: &str) -> Pod {
        spec_mut(&mut p).containers[0].ports = Some(vec![ContainerPort {
            container_port: port,
            host_port: Some(port),
            host_ip: Some(ip.to_string()).filter(|s| !s.is_empty()),
            protocol: Some(proto.to_string()).filter(|s| !s.is_empty()),
            name: None,
        }]);
        p
    }

    #[test]
    fn host_port_conflicts() {
        let existing = bound(with_port(pod("d", "a", &[]), "10.0.0.1", 8080, "TCP"), "n1");
        let ni = node_info(&std_node("n1", &[]), &[existing]);
        let check =
            |ip: &str, port: i32, proto: &str| filter(&info(&with_port(pod("d", "b", &[]), ip, port, proto)), &ni);
        assert_eq!(check("", 8080, "").unwrap_err().code, Code::Unschedulable, "0.0.0.0 conflicts with any address");
        assert!(check("10.0.0.1", 8080, "TCP").is_err());
        assert!(check("10.0.0.2", 8080, "TCP").is_ok());
        assert!(check("10.0.0.1", 8080, "UDP").is_ok());
        assert!(check("10.0.0.1", 8081, "TCP").is_ok());
        assert!(filter(&info(&pod("d", "c", &[])), &ni).is_ok());
    }

    #[test]
    fn removing_the_pod_frees_its_ports() {
        let existing = bound(with_port(pod("d", "a", &[]), "", 80, ""), "n1");
        let mut ni = node_info(&std_node("n1", &[]), &[existing.clone()]);
        let p = info(&with_port(pod("d", "b", &[]), "10.0.0.1", 80, "TCP"));
        assert!(filter(&p, &ni).is_err());
        ni.remove_pod(&existing.uid);
        assert!(filter(&p, &ni).is_ok());
    }
}
