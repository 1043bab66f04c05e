//! From a pod's container to what the runtime runs: the command line (the image's
//! entrypoint and cmd under the pod's command and args), the environment (the image's,
//! then `envFrom`, then `env` with `valueFrom` and `$(VAR)` expansion), the user and the
//! resource limits — the rules of upstream's kuberuntime and `expansion` packages.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::kubelet::image::ImageConfig;

/// ConfigMaps and Secrets a container refers to, by (kind, name): their data as text.
pub type Sources = HashMap<(&'static str, String), BTreeMap<String, String>>;

/// The ConfigMaps and Secrets `c`'s environment refers to: (kind, name, optional).
pub fn referenced(c: &Container) -> Vec<(&'static str, String, bool)> {
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            out.push(("ConfigMap", r.name.clone(), r.optional.unwrap_or(false)));
        }
        if let Some(r) = &from.secret_key_ref {
            out.push(("Secret", r.name.clone(), r.optional.unwrap_or(false)));
        }
    }
    for f in c.env_from.iter().flatten() {
        if let Some(r) = &f.config_map_ref {
            out.push(("ConfigMap", r.name.clone(), r.optional.unwrap_or(false)));
        }
        if let Some(r) = &f.secret_ref {
            out.push(("Secret", r.name.clone(), r.optional.unwrap_or(false)));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `$(VAR)` expansion as Kubernetes does it: `$$` escapes, unknown references stay as
/// they are.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The value of a `fieldRef`.
fn field(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let lookup =
        |m: &Option<BTreeMap<String, String>>, k: &str| m.as_ref().and_then(|m| m.get(k).cloned()).unwrap_or_default();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        p => {
            let key = |prefix: &str| p.strip_prefix(prefix).and_then(|r| r.strip_suffix("']")).map(str::to_string);
            if let Some(k) = key("metadata.labels['") {
                lookup(&meta.labels, &k)
            } else if let Some(k) = key("metadata.annotations['") {
                lookup(&meta.annotations, &k)
            } else {
                return Err(format!("unsupported fieldRef {p:?}"));
            }
        }
    })
}

/// A resource value in units of `divisor_milli` thousandths, rounded up (the downward
/// API's `resourceFieldRef`).
fn quantity_value(q: &Quantity, divisor_milli: i64) -> Result<String, String> {
    let v = keelson_scheduler::quantity::milli_value(&q.0).ok_or_else(|| format!("{:?} is not a quantity", q.0))?;
    let d = divisor_milli.max(1);
    Ok(format!("{}", (v + d - 1).div_euclid(d)))
}

/// The container's environment, `NAME=value` (the image's first; later ones win).
pub fn env(
    pod: &Pod,
    c: &Container,
    image_env: &[String],
    sources: &Sources,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<String>, String> {
    let mut vars: Vec<(String, String)> =
        image_env.iter().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = vars.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let src = match (&f.config_map_ref, &f.secret_ref) {
            (Some(r), _) => sources.get(&("ConfigMap", r.name.clone())),
            (_, Some(r)) => sources.get(&("Secret", r.name.clone())),
            _ => None,
        };
        for (k, v) in src.into_iter().flatten() {
            set(&mut vars, format!("{prefix}{k}"), v.clone());
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            if let Some(r) = &from.field_ref {
                field(pod, &r.field_path, pod_ip, host_ip)?
            } else if let Some(r) = &from.config_map_key_ref {
                match sources.get(&("ConfigMap", r.name.clone())).and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("couldn't find key {} in ConfigMap {}", r.key, r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match sources.get(&("Secret", r.name.clone())).and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("couldn't find key {} in Secret {}", r.key, r.name)),
                }
            } else if let Some(r) = &from.resource_field_ref {
                let res = c.resources.as_ref();
                let (kind, name) = r.resource.split_once('.').unwrap_or(("", &r.resource));
                let map = match kind {
                    "limits" => res.and_then(|r| r.limits.as_ref()),
                    _ => res.and_then(|r| r.requests.as_ref()),
                };
                let divisor = match &r.divisor {
                    Some(d) => keelson_scheduler::quantity::milli_value(&d.0)
                        .ok_or_else(|| format!("divisor {:?} is not a quantity", d.0))?,
                    None => 1000,
                };
                match map.and_then(|m| m.get(name)) {
                    Some(q) => quantity_value(q, divisor)?,
                    None => "0".into(),
                }
            } else {
                String::new()
            }
        } else {
            let known: HashMap<String, String> = vars.iter().cloned().collect();
            expand(e.value.as_deref().unwrap_or_default(), &|n| known.get(n).cloned())
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The command line: `command` replaces the image's entrypoint (and drops its cmd),
/// `args` replaces its cmd; `$(VAR)` references expand from the environment.
pub fn args(c: &Container, image: &ImageConfig, env: &[String]) -> Result<Vec<String>, String> {
    let known: HashMap<&str, &str> = env.iter().filter_map(|kv| kv.split_once('=')).collect();
    let vars = |n: &str| known.get(n).map(|v| (*v).to_string());
    let out: Vec<String> = match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            cmd.iter().chain(args.iter().flatten()).map(|s| expand(s, &vars)).collect()
        }
        (_, Some(args)) if !args.is_empty() => {
            image.entrypoint.iter().cloned().chain(args.iter().map(|s| expand(s, &vars))).collect()
        }
        _ => image.entrypoint.iter().chain(image.cmd.iter()).cloned().collect(),
    };
    if out.is_empty() {
        return Err("no command specified: the container has no command and its image has no entrypoint or cmd".into());
    }
    Ok(out)
}

/// Millicores of a CPU quantity, bytes of a memory one.
pub fn millis(q: &Quantity) -> Option<i64> {
    keelson_scheduler::quantity::milli_value(&q.0)
}
pub fn bytes(q: &Quantity) -> Option<i64> {
    keelson_scheduler::quantity::value(&q.0)
}

/// uid and gid: the container's securityContext, then the pod's, then the image's user
/// (numeric, or a name looked up in the image's /etc/passwd).
pub fn user(
    pod: &Pod,
    c: &Container,
    image_user: Option<&str>,
    rootfs: &std::path::Path,
) -> Result<(u32, u32), String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let run_as = csc.and_then(|s| s.run_as_user).or(psc.and_then(|s| s.run_as_user));
    let run_group = csc.and_then(|s| s.run_as_group).or(psc.and_then(|s| s.run_as_group));
    let (mut uid, mut gid) = (0u32, 0u32);
    if let Some(u) = image_user.filter(|u| !u.is_empty()) {
        let (name, group) = u.split_once(':').map_or((u, None), |(a, b)| (a, Some(b)));
        match name.parse::<u32>() {
            Ok(n) => uid = n,
            Err(_) => {
                let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
                let entry =
                    passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 3 && f[0] == name);
                let Some(f) = entry else {
                    return Err(format!("unable to find user {name}: no matching entries in passwd file"));
                };
                uid = f[2].parse().map_err(|_| format!("bad uid for {name}"))?;
                gid = f[3].parse().map_err(|_| format!("bad gid for {name}"))?;
            }
        }
        if let Some(g) = group {
            gid = g.parse().map_err(|_| format!("group {g:?} must be numeric"))?;
        }
    }
    if let Some(u) = run_as {
        uid = u32::try_from(u).map_err(|_| format!("runAsUser {u} is out of range"))?;
    }
    if let Some(g) = run_group {
        gid = u32::try_from(g).map_err(|_| format!("runAsGroup {g} is out of range"))?;
    }
    let non_root = csc.and_then(|s| s.run_as_non_root).or(psc.and_then(|s| s.run_as_non_root)).unwrap_or(false);
    if non_root && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u1", "labels": { "app": "web" } },
            "spec": { "nodeName": "n1", "containers": [] }
        }))
        .unwrap()
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expansion() {
        let vars = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("é$(A)", &vars), "éx");
    }

    #[test]
    fn environment_from_everywhere() {
        let c = container(json!({ "name": "c", "env": [
            { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
            { "name": "IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
            { "name": "K", "valueFrom": { "configMapKeyRef": { "name": "cm", "key": "k" } } },
            { "name": "S", "valueFrom": { "secretKeyRef": { "name": "sec", "key": "pw" } } },
            { "name": "GREETING", "value": "hi $(POD) on $(PATH)" },
            { "name": "PATH", "value": "/usr/local/bin" },
        ], "envFrom": [{ "configMapRef": { "name": "cm" }, "prefix": "CM_" }] }));
        let mut sources = Sources::new();
        sources.insert(("ConfigMap", "cm".into()), BTreeMap::from([("k".to_string(), "v".to_string())]));
        sources.insert(("Secret", "sec".into()), BTreeMap::from([("pw".to_string(), "hunter2".to_string())]));
        let e = env(&pod(), &c, &["PATH=/bin".to_string()], &sources, "10.0.0.2", "127.0.0.1").unwrap();
        assert_eq!(
            e,
            vec![
                "PATH=/usr/local/bin",
                "CM_k=v",
                "POD=p",
                "APP=web",
                "IP=10.0.0.2",
                "K=v",
                "S=hunter2",
                "GREETING=hi p on /bin"
            ]
        );
        assert_eq!(referenced(&c), vec![("ConfigMap", "cm".to_string(), false), ("Secret", "sec".to_string(), false)]);
        let missing = container(
            json!({ "name": "c", "env": [{ "name": "K", "valueFrom": { "configMapKeyRef": { "name": "cm", "key": "nope" } } }] }),
        );
        assert!(env(&pod(), &missing, &[], &sources, "", "").unwrap_err().contains("couldn't find key nope"));
    }

    #[test]
    fn command_line_rules() {
        let image = ImageConfig { entrypoint: vec!["/ep".into()], cmd: vec!["default".into()], ..Default::default() };
        let env = vec!["N=3".to_string()];
        let c = |v| container(v);
        assert_eq!(args(&c(json!({ "name": "c" })), &image, &env).unwrap(), vec!["/ep", "default"]);
        assert_eq!(
            args(&c(json!({ "name": "c", "args": ["x", "$(N)"] })), &image, &env).unwrap(),
            vec!["/ep", "x", "3"]
        );
        assert_eq!(
            args(&c(json!({ "name": "c", "command": ["sh"], "args": ["-c", "echo"] })), &image, &env).unwrap(),
            vec!["sh", "-c", "echo"]
        );
        let empty = ImageConfig::default();
        assert!(args(&c(json!({ "name": "c" })), &empty, &env).unwrap_err().contains("no command"));
    }

    #[test]
    fn users() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n")
            .unwrap();
        let p = pod();
        let c = container(json!({ "name": "c" }));
        assert_eq!(user(&p, &c, None, dir.path()).unwrap(), (0, 0));
        assert_eq!(user(&p, &c, Some("www"), dir.path()).unwrap(), (33, 34));
        assert_eq!(user(&p, &c, Some("1000:5"), dir.path()).unwrap(), (1000, 5));
        assert!(user(&p, &c, Some("ghost"), dir.path()).unwrap_err().contains("unable to find user ghost"));
        let c2 = container(json!({ "name": "c", "securityContext": { "runAsUser": 7, "runAsNonRoot": true } }));
        assert_eq!(user(&p, &c2, Some("www"), dir.path()).unwrap(), (7, 34));
        let c3 = container(json!({ "name": "c", "securityContext": { "runAsNonRoot": true } }));
        assert!(user(&p, &c3, None, dir.path()).unwrap_err().contains("runAsNonRoot"));
    }
}
