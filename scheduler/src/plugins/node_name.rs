//! NodeName: a pod naming a node in `spec.nodeName` fits only that node.

use crate::{
    framework::{FilterResult, Rejection},
    node_info::NodeData,
    pod_info::PodInfo,
};

pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub fn filter(pod: &PodInfo, node: &NodeData) -> FilterResult {
    if pod.node_name.is_empty() || pod.node_name == node.name {
        Ok(())
    } else {
        Err(Rejection::unresolvable(ERR_REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn only_the_named_node() {
        let n = node_data(&std_node("n1", &[]));
        let mut p = info(&pod("default", "p", &[]));
        assert!(filter(&p, &n).is_ok());
        p.node_name = "n1".into();
        assert!(filter(&p, &n).is_ok());
        p.node_name = "n2".into();
        assert_eq!(filter(&p, &n).unwrap_err().reasons, vec![ERR_REASON]);
    }
}
