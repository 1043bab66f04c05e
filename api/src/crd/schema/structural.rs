//! Structural schema checks of a CRD schema, with the CRD-API rules on
//! keywords, list/map types, value validations and defaults.

use std::collections::HashSet;

use serde_json::Value;

use super::prune::Pruner;
use super::render::{go_quote, render_string_slice, render_value};
use super::sch::{sch, Additional, Sch};
use super::validate::{compile_pattern, Validator};
use super::values::{depth_exceeds, drop_deep, is_zeroish};
use super::{
    child, e_forbidden, e_invalid, e_not_supported, e_required, index, is_meta_field, key, FieldError, EMBEDDED,
    INT_OR_STRING, LIST_MAP_KEYS, LIST_TYPE, MAP_TYPE, MAX_DEPTH, PRESERVE, VALIDATIONS,
};

const V3_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// Check that a CRD schema is structural enough to serve (returns problems as
/// FieldErrors with field paths under `prefix`, e.g.
/// "spec.versions[0].schema.openAPIV3Schema"): every node with
/// properties/items has a type (except under x-kubernetes-preserve-unknown-fields
/// or x-kubernetes-int-or-string), the root is type object, `type` values are
/// known, defaults are not allowed in top-level metadata/apiVersion/kind, in
/// nested value validations or under additionalProperties applying to
/// metadata, and defaults must validate and be pruned. Also checks the
/// CRD-API rules on unsupported keywords, list/map types and value
/// validations (allOf/anyOf/oneOf/not) being structural and complete.
pub fn check_structural(schema: &Value, prefix: &str) -> Vec<FieldError> {
    let mut c = Checker::default();
    if sch(schema).is_some_and(Sch::nullable) {
        c.errs.push(e_forbidden(&child(prefix, "nullable"), "nullable cannot be true at the root"));
    }
    c.api_node(schema, prefix, true, &ApiCtx::default(), 0);
    let mut errs = std::mem::take(&mut c.errs);
    if c.too_deep {
        return errs;
    }
    let Some(s) = sch(schema) else {
        return errs;
    };
    c.structural_node(s, Level::Root, prefix, 0);
    c.completeness(s, prefix, 0);
    let mut structural = std::mem::take(&mut c.errs);
    structural.sort_by_cached_key(|e| e.to_string());
    if structural.is_empty() {
        c.defaults_node(s, prefix, true, false, 0);
        errs.append(&mut c.errs);
    } else {
        errs.append(&mut structural);
    }
    errs
}

#[derive(Default)]
struct Checker {
    errs: Vec<FieldError>,
    too_deep: bool,
}

#[derive(Clone, Default)]
struct ApiCtx {
    inside_meta: bool,
    forbid_default: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// Exactly `{type: <t>}` (other keys zero-valued).
fn only_type(v: &Value, t: &str) -> bool {
    v.as_object().is_some_and(|m| {
        m.get("type").and_then(Value::as_str) == Some(t) && m.iter().all(|(k, x)| k == "type" || is_zeroish(x))
    })
}

fn is_int_or_string_any_of(list: Option<&Vec<Value>>) -> bool {
    matches!(list.map(Vec::as_slice), Some([a, b]) if only_type(a, "integer") && only_type(b, "string"))
}

impl Checker {
    fn depth_error(&mut self, path: &str) {
        self.too_deep = true;
        self.errs.push(e_forbidden(path, &format!("must not be nested deeper than {MAX_DEPTH} levels")));
    }

    /// The CRD API validation of one schema node and its subschemas.
    fn api_node(&mut self, v: &Value, path: &str, is_root: bool, ctx: &ApiCtx, depth: usize) {
        if depth > MAX_DEPTH {
            self.depth_error(path);
            return;
        }
        let Some(s) = sch(v) else {
            self.errs.push(e_invalid(path, &render_value(v), "must be a JSON object"));
            return;
        };
        let type_path = child(path, "type");
        match s.get("type") {
            None => {}
            Some(Value::String(t)) => {
                if !t.is_empty() && !V3_TYPES.contains(&t.as_str()) {
                    self.errs.push(e_not_supported(&type_path, &go_quote(t), &V3_TYPES));
                }
                if t == "null" {
                    self.errs
                        .push(e_forbidden(&type_path, "type cannot be set to null, use nullable as an alternative"));
                }
            }
            Some(other) => self.errs.push(e_invalid(&type_path, &render_value(other), "must be a string")),
        }
        if s.get("default").is_some() {
            if let Some(reason) = &ctx.forbid_default {
                self.errs.push(e_forbidden(&child(path, "default"), &format!("must not be set {reason}")));
            }
        }
        if !s.str("id").is_empty() {
            self.errs.push(e_forbidden(&child(path, "id"), "id is not supported"));
        }
        for (k, non_empty_only) in [
            ("additionalItems", false),
            ("patternProperties", true),
            ("definitions", true),
            ("dependencies", false),
            ("$ref", false),
        ] {
            if let Some(x) = s.get(k) {
                let present = if non_empty_only { !is_zeroish(x) } else { !x.is_null() };
                if present {
                    self.errs.push(e_forbidden(&child(path, k), &format!("{k} is not supported")));
                }
            }
        }
        if s.arr("items").is_some_and(|a| !a.is_empty()) {
            self.errs.push(e_forbidden(&child(path, "items"), "items must be a schema object and not an array"));
        }
        if ctx.inside_meta && s.flag(EMBEDDED) {
            self.errs.push(e_forbidden(&child(path, EMBEDDED), "must not be used inside of resource meta"));
        }
        if s.flag("uniqueItems") {
            self.errs.push(e_forbidden(
                &child(path, "uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            ));
        }
        match s.additional() {
            Additional::Absent => {}
            additional => {
                if s.has_props() && !matches!(additional, Additional::Bool(true)) {
                    self.errs.push(e_forbidden(
                        &child(path, "additionalProperties"),
                        "additionalProperties and properties are mutual exclusive",
                    ));
                }
                if let Some(ap) = s.get("additionalProperties").filter(|x| x.is_object()) {
                    let mut sub = ctx.clone();
                    if ctx.inside_meta {
                        sub.forbid_default = Some("inside additionalProperties applying to object metadata".into());
                    }
                    self.api_node(ap, &child(path, "additionalProperties"), false, &sub, depth + 1);
                }
            }
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                let mut sub = ctx.clone();
                if (is_root || s.flag(EMBEDDED)) && is_meta_field(k) {
                    sub.inside_meta = true;
                    if is_root {
                        sub.forbid_default = Some(format!("in top-level {k}"));
                    }
                }
                self.api_node(pv, &key(&child(path, "properties"), k), false, &sub, depth + 1);
            }
        }
        if let Some(not) = s.get("not").filter(|x| !x.is_null()) {
            self.api_node(not, &child(path, "not"), false, ctx, depth + 1);
        }
        for junctor in ["allOf", "oneOf", "anyOf"] {
            if let Some(list) = s.arr(junctor) {
                for (i, x) in list.iter().enumerate() {
                    self.api_node(x, &index(&child(path, junctor), i), false, ctx, depth + 1);
                }
            }
        }
        match s.get("items") {
            Some(items @ Value::Object(_)) => self.api_node(items, &child(path, "items"), false, ctx, depth + 1),
            Some(Value::Array(list)) => {
                for (i, x) in list.iter().enumerate() {
                    self.api_node(x, &index(&child(path, "items"), i), false, ctx, depth + 1);
                }
            }
            _ => {}
        }
        if matches!(s.get(PRESERVE), Some(Value::Bool(false))) {
            self.errs.push(e_invalid(&child(path, PRESERVE), "false", "must be true or undefined"));
        }
        self.api_list_map_types(s, path);
    }

    fn api_list_map_types(&mut self, s: Sch<'_>, path: &str) {
        let ty = s.ty();
        let type_path = child(path, "type");
        let type_error = |detail: &str| {
            if ty.is_empty() {
                e_required(&type_path, detail)
            } else {
                e_invalid(&type_path, &go_quote(ty), detail)
            }
        };
        if let Some(map_type) = s.opt_str(MAP_TYPE) {
            if ty != "object" {
                self.errs.push(type_error("must be object if x-kubernetes-map-type is specified"));
            }
            if map_type != "atomic" && map_type != "granular" {
                self.errs.push(e_not_supported(&child(path, MAP_TYPE), &go_quote(map_type), &["atomic", "granular"]));
            }
        }
        let list_type = s.opt_str(LIST_TYPE);
        let items = s.items();
        let items_path = child(path, "items");
        if let Some(lt) = list_type {
            if ty != "array" {
                self.errs.push(type_error("must be array if x-kubernetes-list-type is specified"));
            } else if lt == "set" {
                if let Some(is) = items {
                    match is.ty() {
                        "array" => {
                            if let Some(x) = is.opt_str(LIST_TYPE).filter(|x| *x != "atomic") {
                                self.errs.push(e_invalid(
                                    &child(&items_path, LIST_TYPE),
                                    &go_quote(x),
                                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                                ));
                            }
                        }
                        "object" if is.opt_str(MAP_TYPE) != Some("atomic") => {
                            // Kubernetes shows the items' list type here.
                            let shown = is.opt_str(LIST_TYPE).map_or_else(|| go_quote("null"), go_quote);
                            self.errs.push(e_invalid(
                                &child(&items_path, MAP_TYPE),
                                &shown,
                                "must be atomic as item of a list with x-kubernetes-list-type=set",
                            ));
                        }
                        _ => {}
                    }
                }
            }
            if !matches!(lt, "atomic" | "set" | "map") {
                self.errs.push(e_not_supported(&child(path, LIST_TYPE), &go_quote(lt), &["atomic", "set", "map"]));
            }
        }
        let map_keys = s.strings(LIST_MAP_KEYS);
        if !map_keys.is_empty() {
            match list_type {
                None => self.errs.push(e_required(
                    &child(path, LIST_TYPE),
                    "must be map if x-kubernetes-list-map-keys is non-empty",
                )),
                Some(lt) if lt != "map" => self.errs.push(e_invalid(
                    &child(path, LIST_TYPE),
                    &go_quote(lt),
                    "must be map if x-kubernetes-list-map-keys is non-empty",
                )),
                _ => {}
            }
        }
        if list_type == Some("map") {
            if map_keys.is_empty() {
                self.errs.push(e_required(
                    &child(path, LIST_MAP_KEYS),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            match s.get("items") {
                None => self.errs.push(e_required(&items_path, "must have a schema if x-kubernetes-list-type is map")),
                Some(x) if !x.is_object() => self.errs.push(e_invalid(
                    &items_path,
                    &render_value(x),
                    "must only have a single schema if x-kubernetes-list-type is map",
                )),
                _ => {}
            }
            if let Some(is) = items {
                if is.ty() != "object" {
                    self.errs.push(e_invalid(
                        &child(&items_path, "type"),
                        &go_quote(is.ty()),
                        "must be object if parent array's x-kubernetes-list-type is map",
                    ));
                } else {
                    let rendered_keys = render_string_slice(&map_keys);
                    let mut seen = HashSet::new();
                    for k in &map_keys {
                        match is.prop(k) {
                            Some(ks) => {
                                if matches!(ks.ty(), "array" | "object") {
                                    self.errs.push(e_invalid(
                                        &child(&key(&child(&items_path, "properties"), k), "type"),
                                        &go_quote(is.ty()),
                                        "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                    ));
                                }
                            }
                            None => self.errs.push(e_invalid(
                                &child(path, LIST_MAP_KEYS),
                                &rendered_keys,
                                "entries must all be names of item properties",
                            )),
                        }
                        if !seen.insert(*k) {
                            self.errs.push(e_invalid(
                                &child(path, LIST_MAP_KEYS),
                                &rendered_keys,
                                "must not contain duplicate entries",
                            ));
                        }
                    }
                }
            }
        }
        // set and map list items (and map keys) must not be nullable; map keys
        // must be required or defaulted.
        if let (Some(lt @ ("set" | "map")), Some(is)) = (list_type, items) {
            if is.nullable() {
                self.errs.push(e_forbidden(
                    &child(&items_path, "nullable"),
                    &format!("cannot be nullable when x-kubernetes-list-type is {lt}"),
                ));
            }
            if lt == "map" {
                let required = is.strings("required");
                for k in &map_keys {
                    let Some(ks) = is.prop(k) else { continue };
                    let prop_path = key(&child(&items_path, "properties"), k);
                    if !required.contains(k) && ks.get("default").is_none() {
                        self.errs.push(e_required(
                            &child(&prop_path, "default"),
                            "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                        ));
                    }
                    if ks.nullable() {
                        self.errs.push(e_forbidden(
                            &child(&prop_path, "nullable"),
                            "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                        ));
                    }
                }
            }
        }
    }

    /// Structural invariants of a node of the structural part of the schema.
    fn structural_node(&mut self, s: Sch<'_>, lvl: Level, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let ty = s.ty();
        if ty == "array" && s.get("items").is_none() {
            self.errs.push(e_required(&child(path, "items"), "must be specified"));
        }
        if let Some(items) = s.items() {
            self.structural_node(items, Level::Item, &child(path, "items"), depth + 1);
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                if let Some(p) = sch(pv) {
                    self.structural_node(p, Level::Field, &key(&child(path, "properties"), k), depth + 1);
                }
            }
        }
        let additional = s.additional();
        if !matches!(additional, Additional::Absent) {
            if lvl == Level::Root {
                self.errs.push(e_forbidden(&child(path, "additionalProperties"), "must not be used at the root"));
            }
            if let Additional::Schema(ap) = additional {
                self.structural_node(ap, Level::Field, &child(path, "additionalProperties"), depth + 1);
            }
        }
        let int_or_string = s.flag(INT_OR_STRING);
        let preserve = s.flag(PRESERVE);
        let embedded = s.flag(EMBEDDED);
        if int_or_string && preserve {
            self.errs.push(e_invalid(
                &child(path, PRESERVE),
                "true",
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }
        if int_or_string && embedded {
            self.errs.push(e_invalid(
                &child(path, EMBEDDED),
                "true",
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }
        let skip_any_of = is_int_or_string_any_of(s.arr("anyOf"));
        let skip_first_all_of_any_of = s
            .arr("allOf")
            .and_then(|l| l.first())
            .and_then(sch)
            .is_some_and(|first| is_int_or_string_any_of(first.arr("anyOf")));
        self.value_validation(s, skip_any_of, skip_first_all_of_any_of, lvl, path, depth);

        let type_path = child(path, "type");
        if embedded && ty != "object" {
            let detail = "must be object if x-kubernetes-embedded-resource is true";
            if ty.is_empty() {
                self.errs.push(e_required(&type_path, detail));
            } else {
                self.errs.push(e_invalid(&type_path, &go_quote(ty), detail));
            }
        } else if ty.is_empty() && !int_or_string && !preserve {
            let detail = match lvl {
                Level::Root => "must not be empty at the root",
                Level::Item => "must not be empty for specified array items",
                Level::Field => "must not be empty for specified object fields",
            };
            self.errs.push(e_required(&type_path, detail));
        }
        if embedded && !matches!(additional, Additional::Absent) {
            self.errs.push(e_forbidden(
                &child(path, "additionalProperties"),
                "must not be used if x-kubernetes-embedded-resource is set",
            ));
        }
        if lvl == Level::Root && !ty.is_empty() && ty != "object" {
            self.errs.push(e_invalid(&type_path, &go_quote(ty), "must be object at the root"));
        }
        let check_metadata = lvl == Level::Root || embedded;
        let props_path = child(path, "properties");
        if check_metadata {
            for meta in ["kind", "apiVersion"] {
                if let Some(ms) = s.prop(meta) {
                    if ms.ty() != "string" {
                        self.errs.push(e_invalid(
                            &child(&key(&props_path, meta), "type"),
                            &go_quote(ms.ty()),
                            "must be string",
                        ));
                    }
                }
            }
        }
        if let Some(md) = s.prop("metadata") {
            let md_path = key(&props_path, "metadata");
            if check_metadata && md.ty() != "object" {
                self.errs.push(e_invalid(&child(&md_path, "type"), &go_quote(md.ty()), "must be object"));
            }
            if lvl == Level::Root {
                let allowed = md.0.iter().all(|(k, x)| match k.as_str() {
                    "type" | "default" => true,
                    "properties" => x.as_object().is_some_and(|p| p.keys().all(|n| n == "name" || n == "generateName")),
                    _ => is_zeroish(x),
                });
                if !allowed {
                    self.errs.push(e_forbidden(
                        &md_path,
                        "must not specify anything other than name and generateName, but metadata is implicitly specified",
                    ));
                }
            }
        }
        if embedded && !preserve && !s.has_props() {
            self.errs.push(e_required(
                &props_path,
                "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
            ));
        }
    }

    /// Checks the junctors (allOf/anyOf/oneOf/not) and pattern of a node.
    fn value_validation(
        &mut self,
        v: Sch<'_>,
        skip_any_of: bool,
        skip_first_all_of_any_of: bool,
        lvl: Level,
        path: &str,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        if !skip_any_of {
            if let Some(list) = v.arr("anyOf") {
                for (i, x) in list.iter().enumerate() {
                    self.nested(x, false, lvl, &index(&child(path, "anyOf"), i), depth + 1);
                }
            }
        }
        if let Some(list) = v.arr("allOf") {
            for (i, x) in list.iter().enumerate() {
                self.nested(x, skip_first_all_of_any_of && i == 0, lvl, &index(&child(path, "allOf"), i), depth + 1);
            }
        }
        if let Some(list) = v.arr("oneOf") {
            for (i, x) in list.iter().enumerate() {
                self.nested(x, false, lvl, &index(&child(path, "oneOf"), i), depth + 1);
            }
        }
        if let Some(not) = v.get("not") {
            self.nested(not, false, lvl, &child(path, "not"), depth + 1);
        }
        if let Some(p) = v.opt_str("pattern").filter(|p| !p.is_empty()) {
            if let Err(e) = compile_pattern(p) {
                self.errs.push(e_invalid(
                    &child(path, "pattern"),
                    &go_quote(p),
                    &format!("must be a valid regular expression, but isn't: {e}"),
                ));
            }
        }
    }

    /// A schema under a junctor may only carry value validations.
    fn nested(&mut self, x: &Value, skip_any_of: bool, lvl: Level, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(v) = sch(x) else { return };
        self.value_validation(v, skip_any_of, false, lvl, path, depth);
        if let Some(items) = v.get("items").filter(|i| i.is_object()) {
            self.nested(items, false, lvl, &child(path, "items"), depth + 1);
        }
        if let Some(props) = v.props() {
            for (k, p) in props {
                self.nested(p, false, Level::Field, &key(&child(path, "properties"), k), depth + 1);
            }
        }
        let non_empty = |k: &str| v.get(k).is_some_and(|x| !is_zeroish(x));
        let checks: [(&str, bool, &str); 13] = [
            ("type", non_empty("type"), "must be empty to be structural"),
            ("additionalProperties", v.get("additionalProperties").is_some(), "must be undefined to be structural"),
            ("default", v.default_value().is_some(), "must be undefined to be structural"),
            ("title", non_empty("title"), "must be empty to be structural"),
            ("description", non_empty("description"), "must be empty to be structural"),
            ("nullable", v.nullable(), "must be false to be structural"),
            (PRESERVE, v.flag(PRESERVE), "must be false to be structural"),
            (EMBEDDED, v.flag(EMBEDDED), "must be false to be structural"),
            (INT_OR_STRING, v.flag(INT_OR_STRING), "must be false to be structural"),
            (LIST_MAP_KEYS, non_empty(LIST_MAP_KEYS), "must be empty to be structural"),
            (LIST_TYPE, v.get(LIST_TYPE).is_some_and(|x| !x.is_null()), "must be undefined to be structural"),
            (MAP_TYPE, v.get(MAP_TYPE).is_some_and(|x| !x.is_null()), "must be undefined to be structural"),
            (VALIDATIONS, non_empty(VALIDATIONS), "must be empty to be structural"),
        ];
        for (k, bad, detail) in checks {
            if bad {
                self.errs.push(e_forbidden(&child(path, k), detail));
            }
        }
        if v.props().is_some_and(|p| p.contains_key("metadata")) {
            self.errs.push(e_forbidden(
                &key(&child(path, "properties"), "metadata"),
                "must not be specified in a nested context",
            ));
        }
    }

    /// Every field or array specified in a value validation must also be
    /// specified in the structural part (checked at every structural node).
    fn completeness(&mut self, s: Sch<'_>, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        self.junctors_complete(s, s, path, path, depth);
        if let Some(items) = s.items() {
            self.completeness(items, &child(path, "items"), depth + 1);
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                if let Some(p) = sch(pv) {
                    self.completeness(p, &key(&child(path, "properties"), k), depth + 1);
                }
            }
        }
        if let Some(ap) = s.additional_schema() {
            self.completeness(ap, &child(path, "additionalProperties"), depth + 1);
        }
    }

    fn junctors_complete(&mut self, v: Sch<'_>, s: Sch<'_>, s_path: &str, v_path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(not) = v.get("not") {
            self.nested_complete(not, Some(s), s_path, &child(v_path, "not"), depth + 1);
        }
        for junctor in ["allOf", "anyOf", "oneOf"] {
            if let Some(list) = v.arr(junctor) {
                for (i, x) in list.iter().enumerate() {
                    self.nested_complete(x, Some(s), s_path, &index(&child(v_path, junctor), i), depth + 1);
                }
            }
        }
    }

    fn nested_complete(&mut self, x: &Value, s: Option<Sch<'_>>, s_path: &str, v_path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(v) = sch(x) else { return };
        let Some(s) = s else {
            self.errs.push(e_required(s_path, &format!("because it is defined in {v_path}")));
            return;
        };
        self.junctors_complete(v, s, s_path, v_path, depth);
        if let Some(items) = v.get("items").filter(|i| i.is_object()) {
            self.nested_complete(items, s.items(), &child(s_path, "items"), &child(v_path, "items"), depth + 1);
        }
        if let Some(props) = v.props() {
            for (k, vf) in props {
                let sp = key(&child(s_path, "properties"), k);
                let vp = key(&child(v_path, "properties"), k);
                match s.prop(k) {
                    Some(sf) => self.nested_complete(vf, Some(sf), &sp, &vp, depth + 1),
                    None => self.errs.push(e_required(&sp, &format!("because it is defined in {vp}"))),
                }
            }
        }
    }

    /// Defaults must validate against their schema and be pruned. Defaults
    /// inside resource metadata and under additionalProperties are not
    /// checked here (as in Kubernetes).
    fn defaults_node(&mut self, s: Sch<'_>, path: &str, resource_root: bool, inside_meta: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let embedded = resource_root || s.flag(EMBEDDED);
        let inside_meta = inside_meta && !s.flag(EMBEDDED);
        if let Some(d) = s.default_value() {
            if !inside_meta {
                self.check_default(d, s, &child(path, "default"), embedded);
            }
        }
        if let Some(items) = s.items() {
            self.defaults_node(items, &child(path, "items"), false, inside_meta, depth + 1);
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                if let Some(p) = sch(pv) {
                    let sub_meta = inside_meta || (embedded && is_meta_field(k));
                    self.defaults_node(p, &key(&child(path, "properties"), k), false, sub_meta, depth + 1);
                }
            }
        }
    }

    fn check_default(&mut self, d: &Value, s: Sch<'_>, path: &str, embedded: bool) {
        if depth_exceeds(d, MAX_DEPTH) {
            self.errs.push(e_invalid(path, "\"\"", &format!("must not be nested deeper than {MAX_DEPTH} levels")));
            return;
        }
        let mut pruned = d.clone();
        let mut p = Pruner::default();
        p.node(&mut pruned, Some(s), embedded, 0);
        if !p.pruned.is_empty() {
            self.errs.push(e_invalid(path, &render_value(d), "must not have unknown fields"));
        }
        drop_deep(pruned);
        for dead in p.graveyard {
            drop_deep(dead);
        }
        let mut v = Validator::new(Some(path.to_string()));
        let errs = v.node(d, s, "", 0, embedded).errs;
        self.errs.extend(errs);
    }
}
