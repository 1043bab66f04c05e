//! get and list of PodMetrics and NodeMetrics, shaped as metrics-server shapes them: the
//! pod's (node's) name, namespace and labels, `timestamp`, `window`, and usage as
//! quantities (CPU in the largest exact unit of nanocores, memory in binary units).
//! Label and field selectors select the pods (nodes) themselves, as metrics-server does.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::rates::Usage;
use crate::rest::Ctx;
use crate::serve::{json_response, Body, Output};
use crate::status::ApiError;
use crate::storage::{self, Freshness};

/// Answer a get or list of `ctx.def` (PodMetrics or NodeMetrics).
pub(crate) async fn handle(ctx: &Ctx, verb: &str) -> Result<http::Response<Body>, ApiError> {
    let pods = ctx.def.namespaced;
    let source = ctx
        .api
        .registry
        .find("", "v1", if pods { "pods" } else { "nodes" })
        .ok_or_else(|| ApiError::internal("the core kinds are not registered"))?;
    let not_found = || {
        let mut e = ApiError::not_found(&ctx.def.plural, &ctx.def.group, ctx.name());
        e.message = format!("{}.{} \"{}\" not found", ctx.def.kind.to_ascii_lowercase(), ctx.def.group, ctx.name());
        e
    };
    match verb {
        "get" => {
            let key = storage::object_key(&source, ctx.namespace(), ctx.name());
            let (kv, _) = storage::get(&ctx.api.store, &key, Freshness::Any).await?;
            let obj = storage::decode(&kv.ok_or_else(not_found)?)?;
            let m = metrics_of(ctx, &obj, pods).ok_or_else(not_found)?;
            if ctx.output == Output::Table {
                let t = crate::table::table(&ctx.def, std::slice::from_ref(&m), json!({}), true);
                return Ok(json_response(StatusCode::OK, &t, Output::Table));
            }
            Ok(json_response(StatusCode::OK, &m, output(ctx)))
        }
        "list" => {
            let (labels, fields) = ctx.selectors()?;
            let keep = |o: &Value| labels.matches(o) && fields.matches(o);
            let prefix = storage::list_prefix(&source, ctx.namespace());
            let page = storage::list(&ctx.api.store, &prefix, Freshness::Any, None, None, &keep, true).await?;
            let items: Vec<Value> = page.items.iter().filter_map(|o| metrics_of(ctx, o, pods)).collect();
            let body = match ctx.output {
                Output::Table => crate::table::table(&ctx.def, &items, json!({}), true),
                Output::Metadata => json!({
                    "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {},
                    "items": items.iter().map(crate::meta::partial_object_metadata).collect::<Vec<_>>(),
                }),
                _ => json!({
                    "kind": ctx.def.list_kind, "apiVersion": ctx.def.api_version(), "metadata": {}, "items": items,
                }),
            };
            Ok(json_response(StatusCode::OK, &body, output(ctx)))
        }
        v => Err(ApiError::method_not_allowed(format!("{v} is not supported on {}.{}", ctx.def.plural, ctx.def.group))),
    }
}

fn output(ctx: &Ctx) -> Output {
    match ctx.output {
        Output::Yaml => Output::Yaml,
        Output::Table => Output::Table,
        _ => Output::Json,
    }
}

/// The metrics object of a pod or node, if its usage is known.
fn metrics_of(ctx: &Ctx, obj: &Value, pod: bool) -> Option<Value> {
    let name = obj.pointer("/metadata/name")?.as_str()?;
    let rates = ctx.api.resource_metrics.rates.read().unwrap_or_else(|e| e.into_inner());
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    if let Some(l) = obj.pointer("/metadata/labels") {
        meta.insert("labels".into(), l.clone());
    }
    meta.insert("creationTimestamp".into(), json!(crate::meta::now_rfc3339()));
    let mut out = Map::new();
    out.insert("kind".into(), json!(ctx.def.kind));
    out.insert("apiVersion".into(), json!(ctx.def.api_version()));
    if pod {
        let ns = obj.pointer("/metadata/namespace")?.as_str()?;
        meta.insert("namespace".into(), json!(ns));
        let containers = rates.pod(ns, name)?;
        let (ts, window) =
            containers.iter().fold((i64::MIN, 0), |(t, w), (_, u)| (t.max(u.timestamp_ms), w.max(u.window_ms)));
        out.insert("metadata".into(), Value::Object(meta));
        out.insert("timestamp".into(), json!(timestamp(ts)));
        out.insert("window".into(), json!(go_duration(window)));
        out.insert(
            "containers".into(),
            json!(containers.iter().map(|(c, u)| json!({"name": c, "usage": usage(u)})).collect::<Vec<_>>()),
        );
    } else {
        let u = rates.node(name)?;
        out.insert("metadata".into(), Value::Object(meta));
        out.insert("timestamp".into(), json!(timestamp(u.timestamp_ms)));
        out.insert("window".into(), json!(go_duration(u.window_ms)));
        out.insert("usage".into(), usage(&u));
    }
    Some(Value::Object(out))
}

fn usage(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.nanocores), "memory": memory_quantity(u.memory_bytes)})
}

fn timestamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Nanocores in the largest exact decimal unit (`250m`, `1`, `1500u`, `12345n`), as a
/// `resource.Quantity` scaled by 10⁻⁹ prints.
pub(crate) fn cpu_quantity(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n % 1_000_000_000 == 0 => format!("{}", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

/// Bytes in the largest exact binary unit (`128Mi`, `1000`), as BinarySI quantities print.
pub(crate) fn memory_quantity(b: u64) -> String {
    const UNITS: [(&str, u64); 5] =
        [("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    if b == 0 {
        return "0".into();
    }
    for (s, m) in UNITS {
        if b % m == 0 {
            return format!("{}{s}", b / m);
        }
    }
    b.to_string()
}

/// Milliseconds as Go's `time.Duration.String()` prints them (`15s`, `1.5s`, `1m0.25s`).
pub(crate) fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let neg = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    if ms < 1000 {
        return format!("{neg}{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0')) };
    match (h, m) {
        (0, 0) => format!("{neg}{secs}"),
        (0, m) => format!("{neg}{m}m{secs}"),
        (h, m) => format!("{neg}{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_like_metrics_server() {
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(12_345), "12345n");
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(memory_quantity(128 << 20), "128Mi");
        assert_eq!(memory_quantity(3 << 10), "3Ki");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
    }

    #[test]
    fn windows_print_as_go_durations() {
        assert_eq!(go_duration(15_000), "15s");
        assert_eq!(go_duration(1_500), "1.5s");
        assert_eq!(go_duration(15_003), "15.003s");
        assert_eq!(go_duration(60_250), "1m0.25s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
        assert_eq!(go_duration(500), "500ms");
        assert_eq!(go_duration(0), "0s");
    }
}
