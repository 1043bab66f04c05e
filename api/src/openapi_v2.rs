//! `/openapi/v2`: one Swagger 2.0 document of every served group-version, derived from the
//! OpenAPI 3 documents, as JSON and as the protobuf kubectl asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, gnostic's
//! `openapi.v2.Document`). kubectl 1.27 reads it to learn that PATCH takes
//! `fieldValidation` (then validates server-side) and for `explain`; newer kubectl fall back
//! to it for a group-version their OpenAPI v3 index does not list yet.

use serde_json::{json, Map, Value};

use crate::proto::put_varint;

/// The media type the protobuf document is served as (kubectl asks with the older
/// `…spec.v2@v1.0+protobuf` spelling, which Go's mime parser refuses in a response).
pub const PROTO_MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn v3_ref_to_v2(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                *r = r.replace("#/components/schemas/", "#/definitions/");
            }
            for x in m.values_mut() {
                v3_ref_to_v2(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(v3_ref_to_v2),
        _ => {}
    }
}

/// A v3 operation as Swagger 2.0: query/path parameters typed inline, the request body a
/// `body` parameter, responses with their schema.
fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    for k in ["tags", "description", "operationId", "x-kubernetes-action", "x-kubernetes-group-version-kind"] {
        if let Some(v) = op.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let mut params: Vec<Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let mut q = json!({
                "name": p.get("name").cloned().unwrap_or(json!("")),
                "in": p.get("in").cloned().unwrap_or(json!("query")),
                "description": p.get("description").cloned().unwrap_or(json!("")),
                "type": p.pointer("/schema/type").cloned().unwrap_or(json!("string")),
                "uniqueItems": true,
            });
            if p.get("required") == Some(&json!(true)) {
                q["required"] = json!(true);
            }
            q
        })
        .collect();
    if let Some(schema) = op
        .pointer("/requestBody/content")
        .and_then(Value::as_object)
        .and_then(|c| c.values().next())
        .and_then(|c| c.get("schema"))
    {
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
    }
    out.insert("parameters".into(), Value::Array(params));
    out.insert("consumes".into(), json!(["*/*"]));
    out.insert(
        "produces".into(),
        json!(["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]),
    );
    out.insert("schemes".into(), json!(["https"]));
    let mut responses = Map::new();
    for (code, r) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let mut resp = json!({"description": r.get("description").cloned().unwrap_or(json!(""))});
        if let Some(s) =
            r.get("content").and_then(Value::as_object).and_then(|c| c.values().next()).and_then(|c| c.get("schema"))
        {
            resp["schema"] = s.clone();
        }
        responses.insert(code.clone(), resp);
    }
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

/// Merge per-group-version OpenAPI 3 documents into one Swagger 2.0 document.
pub fn document<'a>(v3: impl Iterator<Item = &'a Value>, version: &str) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for doc in v3 {
        for (p, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
            let mut ops = Map::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                ops.insert(method.clone(), operation(op));
            }
            paths.insert(p.clone(), Value::Object(ops));
        }
        for (name, s) in doc.pointer("/components/schemas").and_then(Value::as_object).into_iter().flatten() {
            definitions.entry(name.clone()).or_insert_with(|| s.clone());
        }
    }
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": paths,
        "definitions": definitions,
    });
    v3_ref_to_v2(&mut doc);
    doc
}

// ---- protobuf (gnostic openapi.v2) ----

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn key(&mut self, tag: u32, wire: u8) {
        put_varint(&mut self.0, u64::from(tag << 3 | u32::from(wire)));
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        self.key(tag, 2);
        put_varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, tag: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(tag, s.as_bytes());
        }
    }
    fn boolean(&mut self, tag: u32, b: bool) {
        if b {
            self.key(tag, 0);
            self.0.push(1);
        }
    }
    fn int64(&mut self, tag: u32, v: i64) {
        if v != 0 {
            self.key(tag, 0);
            put_varint(&mut self.0, v as u64);
        }
    }
    fn double(&mut self, tag: u32, v: f64) {
        if v != 0.0 {
            self.key(tag, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn message(&mut self, tag: u32, m: Enc) {
        self.bytes(tag, &m.0);
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `Any{yaml}`: a JSON value's text (JSON is YAML).
fn any(v: &Value) -> Enc {
    let mut e = Enc::default();
    e.string(2, &v.to_string());
    e
}

/// `NamedAny` vendor extensions (`x-…` keys) of an object.
fn extensions(e: &mut Enc, tag: u32, v: &Value) {
    for (k, x) in v.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("x-")) {
        let mut n = Enc::default();
        n.string(1, k);
        n.message(2, any(x));
        e.message(tag, n);
    }
}

fn schema(v: &Value, depth: usize) -> Enc {
    let mut e = Enc::default();
    if depth > 64 {
        return e;
    }
    e.string(1, s(v, "$ref"));
    e.string(2, s(v, "format"));
    e.string(3, s(v, "title"));
    e.string(4, s(v, "description"));
    if let Some(d) = v.get("default") {
        e.message(5, any(d));
    }
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let i = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    e.double(6, f("multipleOf"));
    e.double(7, f("maximum"));
    e.boolean(8, b("exclusiveMaximum"));
    e.double(9, f("minimum"));
    e.boolean(10, b("exclusiveMinimum"));
    e.int64(11, i("maxLength"));
    e.int64(12, i("minLength"));
    e.string(13, s(v, "pattern"));
    e.int64(14, i("maxItems"));
    e.int64(15, i("minItems"));
    e.boolean(16, b("uniqueItems"));
    e.int64(17, i("maxProperties"));
    e.int64(18, i("minProperties"));
    for r in v.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        e.string(19, r);
    }
    for x in v.get("enum").and_then(Value::as_array).into_iter().flatten() {
        e.message(20, any(x));
    }
    match v.get("additionalProperties") {
        Some(Value::Bool(flag)) => {
            let mut a = Enc::default();
            a.key(2, 0);
            a.0.push(u8::from(*flag));
            e.message(21, a);
        }
        Some(sub @ Value::Object(_)) => {
            let mut a = Enc::default();
            a.message(1, schema(sub, depth + 1));
            e.message(21, a);
        }
        _ => {}
    }
    let types: Vec<&str> = match v.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let mut t = Enc::default();
        for x in types {
            t.string(1, x);
        }
        e.message(22, t);
    }
    if let Some(items) = v.get("items") {
        let mut it = Enc::default();
        match items {
            Value::Array(a) => a.iter().for_each(|x| it.message(1, schema(x, depth + 1))),
            x => it.message(1, schema(x, depth + 1)),
        }
        e.message(23, it);
    }
    for x in v.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        e.message(24, schema(x, depth + 1));
    }
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        let mut p = Enc::default();
        for (name, x) in props {
            let mut n = Enc::default();
            n.string(1, name);
            n.message(2, schema(x, depth + 1));
            p.message(1, n);
        }
        e.message(25, p);
    }
    e.boolean(27, b("readOnly"));
    extensions(&mut e, 31, v);
    e
}

/// A non-body parameter (`NonBodyParameter` → query or path sub-schema) or a body one.
fn parameter(p: &Value) -> Enc {
    let mut param = Enc::default();
    if s(p, "in") == "body" {
        let mut body = Enc::default();
        body.string(1, s(p, "description"));
        body.string(2, s(p, "name"));
        body.string(3, "body");
        body.boolean(4, p.get("required") == Some(&json!(true)));
        if let Some(sc) = p.get("schema") {
            body.message(5, schema(sc, 0));
        }
        param.message(1, body);
    } else {
        // Query and path sub-schemas share their first fields' numbers.
        let mut sub = Enc::default();
        sub.boolean(1, p.get("required") == Some(&json!(true)));
        sub.string(2, s(p, "in"));
        sub.string(3, s(p, "description"));
        sub.string(4, s(p, "name"));
        let (type_tag, unique_tag) = if s(p, "in") == "path" { (5, 19) } else { (6, 20) };
        sub.string(type_tag, s(p, "type"));
        sub.boolean(unique_tag, p.get("uniqueItems") == Some(&json!(true)));
        let mut nb = Enc::default();
        nb.message(if s(p, "in") == "path" { 4 } else { 3 }, sub);
        param.message(2, nb);
    }
    let mut item = Enc::default();
    item.message(1, param);
    item
}

fn operation_proto(op: &Value) -> Enc {
    let mut e = Enc::default();
    for t in op.get("tags").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        e.string(1, t);
    }
    e.string(3, s(op, "description"));
    e.string(5, s(op, "operationId"));
    for x in op.get("produces").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        e.string(6, x);
    }
    for x in op.get("consumes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        e.string(7, x);
    }
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        e.message(8, parameter(p));
    }
    let mut responses = Enc::default();
    for (code, r) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let mut resp = Enc::default();
        resp.string(1, s(r, "description"));
        if let Some(sc) = r.get("schema") {
            let mut item = Enc::default();
            item.message(1, schema(sc, 0));
            resp.message(2, item);
        }
        let mut value = Enc::default();
        value.message(1, resp);
        let mut named = Enc::default();
        named.string(1, code);
        named.message(2, value);
        responses.message(1, named);
    }
    e.message(9, responses);
    for x in op.get("schemes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        e.string(10, x);
    }
    extensions(&mut e, 13, op);
    e
}

/// The gnostic `openapi.v2.Document` of a Swagger 2.0 JSON document.
pub fn to_proto(doc: &Value) -> Vec<u8> {
    let mut d = Enc::default();
    d.string(1, s(doc, "swagger"));
    let mut info = Enc::default();
    info.string(1, doc.pointer("/info/title").and_then(Value::as_str).unwrap_or(""));
    info.string(2, doc.pointer("/info/version").and_then(Value::as_str).unwrap_or(""));
    d.message(2, info);
    let mut paths = Enc::default();
    for (p, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
        let mut pi = Enc::default();
        for (method, tag) in
            [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("options", 6), ("head", 7), ("patch", 8)]
        {
            if let Some(op) = item.get(method) {
                pi.message(tag, operation_proto(op));
            }
        }
        let mut named = Enc::default();
        named.string(1, p);
        named.message(2, pi);
        paths.message(2, named);
    }
    d.message(8, paths);
    let mut defs = Enc::default();
    for (name, sc) in doc.get("definitions").and_then(Value::as_object).into_iter().flatten() {
        let mut named = Enc::default();
        named.string(1, name);
        named.message(2, schema(sc, 0));
        defs.message(1, named);
    }
    d.message(9, defs);
    d.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_becomes_swagger_and_protobuf() {
        let v3 = json!({
            "paths": {"/api/v1/namespaces/{namespace}/configmaps/{name}": {"patch": {
                "operationId": "patchCoreV1NamespacedConfigMap",
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                               {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/io.k8s.api.core.v1.ConfigMap"}}}}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": "ConfigMap"}}}},
            "components": {"schemas": {"io.k8s.api.core.v1.ConfigMap": {"type": "object", "properties": {
                "data": {"type": "object", "additionalProperties": {"type": "string"}},
                "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "ConfigMap", "version": "v1"}]}}},
        });
        let doc = document([&v3].into_iter(), "v1.33.0");
        let op = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(
            op["parameters"][0],
            json!({"name": "fieldValidation", "in": "query", "description": "", "type": "string", "uniqueItems": true})
        );
        assert_eq!(op["parameters"][2]["in"], "body");
        assert_eq!(op["responses"]["200"]["schema"]["$ref"], "#/definitions/io.k8s.api.core.v1.ConfigMap");
        assert_eq!(
            doc["definitions"]["io.k8s.api.core.v1.ConfigMap"]["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let pb = to_proto(&doc);
        // The document starts with swagger = "2.0" (field 1) and carries the names.
        assert_eq!(&pb[..5], b"\x0a\x032.0");
        let text = String::from_utf8_lossy(&pb);
        for needle in
            ["fieldValidation", "x-kubernetes-group-version-kind", "io.k8s.api.core.v1.ConfigMap", "#/definitions/"]
        {
            assert!(text.contains(needle), "{needle}");
        }
    }
}
