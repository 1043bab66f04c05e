//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods tolerating
//! `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::Taint;

use crate::{
    framework::{FilterResult, Rejection},
    node_info::NodeData,
    plugins::taint_toleration::tolerated,
    pod_info::PodInfo,
};

pub const ERR_REASON: &str = "node(s) were unschedulable";

pub fn filter(pod: &PodInfo, node: &NodeData) -> FilterResult {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        value: None,
        time_added: None,
    };
    if tolerated(&pod.tolerations, &taint) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(ERR_REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{framework::Code, testutil::*};

    #[test]
    fn cordoned_nodes_need_a_toleration() {
        let mut n = node_data(&std_node("n1", &[]));
        let mut p = pod("default", "p", &[]);
        assert!(filter(&info(&p), &n).is_ok());
        n.unschedulable = true;
        let err = filter(&info(&p), &n).unwrap_err();
        assert_eq!((err.code, err.reasons), (Code::UnschedulableAndUnresolvable, vec![ERR_REASON.into()]));
        spec_mut(&mut p).tolerations =
            Some(vec![toleration("node.kubernetes.io/unschedulable", "Exists", "", "NoSchedule")]);
        assert!(filter(&info(&p), &n).is_ok());
        spec_mut(&mut p).tolerations = Some(vec![toleration("", "Exists", "", "")]);
        assert!(filter(&info(&p), &n).is_ok());
    }
}
