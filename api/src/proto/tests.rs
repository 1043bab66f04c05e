//! Round trips: objects built with the k8s-pb (prost) types, encoded as kubectl encodes
//! them — including the zero values Go's marshaller writes for non-pointer fields —
//! decode to the JSON a JSON client would have sent. Plus hostile bodies: no panic.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use prost::Message;
use serde_json::json;

use super::*;

fn body(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let env = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(env.encode_to_vec());
    out
}

/// ObjectMeta as Go writes it: every non-pointer field present, zero or not.
fn go_meta(name: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: Some(name.into()),
        generate_name: Some(String::new()),
        namespace: Some(String::new()),
        self_link: Some(String::new()),
        uid: Some(String::new()),
        resource_version: Some(String::new()),
        generation: Some(0),
        creation_timestamp: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

#[test]
fn deployment_as_kubectl_create_sends_it() {
    let d = apps::Deployment {
        metadata: Some(go_meta("web")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(go_meta("")),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("nginx".into()),
                        image: Some("nginx:1.27".into()),
                        ports: vec![core::ContainerPort {
                            container_port: Some(80),
                            host_port: Some(0),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }],
                        resources: Some(core::ResourceRequirements::default()),
                        termination_message_path: Some(String::new()),
                        stdin: Some(false),
                        ..Default::default()
                    }],
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy::default()),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus { observed_generation: Some(0), replicas: Some(0), ..Default::default() }),
    };
    let v = decode_body(&body("apps/v1", "Deployment", d.encode_to_vec()), None).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": ""}},
                    "spec": {
                        "containers": [{
                            "name": "nginx", "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {},
                        }],
                        "enableServiceLinks": false,
                    },
                },
                "strategy": {},
            },
            "status": {"replicas": 0},
        })
    );
}

#[test]
fn secret_bytes_configmap_maps_service_intorstr_and_times() {
    let s = core::Secret {
        metadata: Some(meta::ObjectMeta { name: Some("s".into()), ..Default::default() }),
        data: BTreeMap::from([("k".to_string(), vec![0u8, 255, 10]), ("empty".to_string(), vec![])]),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let v = decode_body(&body("v1", "Secret", s.encode_to_vec()), None).unwrap();
    assert_eq!(v["data"], json!({"k": "AP8K", "empty": ""}));
    assert_eq!(v["type"], "Opaque");

    let svc = core::Service {
        spec: Some(core::ServiceSpec {
            ports: vec![
                core::ServicePort {
                    port: Some(80),
                    target_port: Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: Some("http".into()) }),
                    ..Default::default()
                },
                core::ServicePort {
                    port: Some(443),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8443),
                        str_val: Some(String::new()),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = decode_body(&body("v1", "Service", svc.encode_to_vec()), None).unwrap();
    assert_eq!(v["spec"]["ports"], json!([{"port": 80, "targetPort": "http"}, {"port": 443, "targetPort": 8443}]));

    let ev = core::Event {
        first_timestamp: Some(meta::Time { seconds: Some(1_700_000_000), nanos: Some(0) }),
        event_time: Some(meta::MicroTime { seconds: Some(1_700_000_000), nanos: Some(123_456_000) }),
        ..Default::default()
    };
    let v = decode_body(&body("v1", "Event", ev.encode_to_vec()), None).unwrap();
    assert_eq!(v["firstTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(v["eventTime"], "2023-11-14T22:13:20.123456Z");
}

#[test]
fn token_request_and_access_review() {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::authorization::v1 as authz;
    let tr = authn::TokenRequest {
        metadata: Some(go_meta("default")),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec!["https://kubernetes.default.svc".into()],
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        status: Some(authn::TokenRequestStatus {
            token: Some(String::new()),
            expiration_timestamp: Some(meta::Time::default()),
        }),
    };
    let v = decode_body(&body("authentication.k8s.io/v1", "TokenRequest", tr.encode_to_vec()), None).unwrap();
    assert_eq!(v["spec"], json!({"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}));
    assert_eq!(v["status"], json!({"expirationTimestamp": null}));

    let r = authz::SelfSubjectAccessReview {
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                verb: Some("create".into()),
                resource: Some("pods".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = decode_body(&body("authorization.k8s.io/v1", "SelfSubjectAccessReview", r.encode_to_vec()), None).unwrap();
    assert_eq!(v["spec"]["resourceAttributes"], json!({"verb": "create", "resource": "pods", "namespace": "default"}));
}

#[test]
fn envelope_without_type_uses_the_route_and_bad_bodies_are_errors() {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta { name: Some("c".into()), ..Default::default() }),
        data: BTreeMap::from([("a".to_string(), "1".to_string())]),
        ..Default::default()
    };
    let v = decode_body(&body("", "", cm.encode_to_vec()), Some(("v1", "ConfigMap"))).unwrap();
    assert_eq!(v, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}));
    assert_eq!(decode_body(b"{}", None).unwrap_err(), ProtoError::Magic);
    assert_eq!(
        decode_body(&body("v1", "Nope", vec![]), None).unwrap_err().to_string(),
        "no protobuf message is known for apiVersion \"v1\" kind \"Nope\""
    );
    let mut truncated = body("v1", "ConfigMap", cm.encode_to_vec());
    truncated.pop();
    assert!(decode_body(&truncated, None).is_err());
    // name (field 1 of ObjectMeta) sent as a varint: a wire-type mismatch, not a panic.
    assert!(matches!(
        decode_body(&body("v1", "ConfigMap", vec![0x0a, 0x02, 0x08, 0x01]), None),
        Err(ProtoError::Mismatch { field: "name", .. })
    ));
    // invalid UTF-8 in a string
    assert_eq!(
        decode_body(&body("v1", "ConfigMap", vec![0x0a, 0x03, 0x0a, 0x01, 0xff]), None),
        Err(ProtoError::Utf8("name"))
    );
    assert_eq!(decode::duration_for_test(90_000_000_000), "1m30s");
    assert_eq!(decode::duration_for_test(1_500_000), "1.5ms");
}

#[test]
fn deep_nesting_is_refused() {
    // JSONSchemaProps.not is self-recursive: 200 levels of it.
    let name = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
    let not = fields_of(name).unwrap().iter().find(|f| f.1 == "not").unwrap().0;
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..200 {
        let mut outer = Vec::new();
        put_varint(&mut outer, u64::from(not << 3 | 2));
        put_varint(&mut outer, inner.len() as u64);
        outer.extend(&inner);
        inner = outer;
    }
    assert_eq!(decode::message(name, &inner, 0), Err(ProtoError::Depth(decode::MAX_DEPTH)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    /// Arbitrary bytes after the magic, for several kinds: an error or a value, never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512), kind in 0usize..4) {
        let (av, k) = [("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Secret"), ("apiextensions.k8s.io/v1", "CustomResourceDefinition")][kind];
        let _ = decode_body(&body(av, k, raw.clone()), None);
        let mut direct = MAGIC.to_vec();
        direct.extend(&raw);
        let _ = decode_body(&direct, None);
    }

    /// Single-byte mutations of a valid Deployment body: never a panic.
    #[test]
    fn mutated_bodies_never_panic(pos in 0usize..4096, byte in any::<u8>()) {
        let d = apps::Deployment { metadata: Some(go_meta("web")), ..Default::default() };
        let mut b = body("apps/v1", "Deployment", d.encode_to_vec());
        let i = pos % b.len();
        b[i] = byte;
        let _ = decode_body(&b, None);
    }
}
