//! Validation of objects against a schema, as kube-openapi's `validate` package
//! does it when the apiserver wires it up.

use std::collections::{HashMap, HashSet};

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::formats::{effective_format, format_valid};
use super::list_type::list_types_object_value;
use super::number::{int_bound, is_json_integer, num_of, Num};
use super::render::{go_float, go_quote, render_num, render_value, to_go_json};
use super::sch::{sch, Sch};
use super::values::{canon_string, depth_exceeds, enum_matches, too_deep_path};
use super::{
    child, e_invalid, e_not_supported, e_required, index, is_meta_field, mk, ErrType, FieldError, INT_OR_STRING,
    MAX_DEPTH,
};

/// Compiled-size limit for user supplied `pattern` regular expressions.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const NIL_FIELD: &str = "<nil>";

/// Validate an object against the schema (after defaulting and pruning):
/// types, nullable, x-kubernetes-int-or-string, required, enum, pattern,
/// numeric bounds, multipleOf, string lengths (unicode characters), item and
/// property counts, uniqueItems, supported string formats,
/// additionalProperties, allOf/anyOf/oneOf/not, and x-kubernetes-list-type
/// set/map uniqueness. The root's apiVersion, kind and metadata are not
/// validated. Paths are relative to the object root, e.g. "spec.replicas".
pub fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    if let Some(p) = too_deep_path(obj, MAX_DEPTH) {
        let field = if p.is_empty() { NIL_FIELD.to_string() } else { p };
        return vec![e_invalid(&field, "\"\"", &format!("must not be nested deeper than {MAX_DEPTH} levels"))];
    }
    let Some(s) = sch(schema) else {
        return Vec::new();
    };
    let mut v = Validator::new(None);
    let mut errs = v.node(obj, s, "", 0, true).errs;
    list_types_object_value(obj, s, "", 0, true, &mut errs);
    errs
}

#[derive(Default)]
pub(super) struct Res {
    pub(super) errs: Vec<FieldError>,
    matches: usize,
}

impl Res {
    fn push(&mut self, e: FieldError) {
        self.errs.push(e);
    }

    fn merge(&mut self, other: Res) {
        self.errs.extend(other.errs);
        self.matches += other.matches;
    }

    fn ok(&self) -> bool {
        self.errs.is_empty()
    }
}

pub(super) fn compile_pattern(p: &str) -> Result<Regex, String> {
    RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| match e {
        regex::Error::Syntax(msg) => {
            let reason = msg.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or("invalid syntax").to_string();
            format!("error parsing regexp: {reason}: `{p}`")
        }
        regex::Error::CompiledTooBig(_) => "error parsing regexp: expression too large".to_string(),
        other => format!("error parsing regexp: {other}"),
    })
}

pub(super) struct Validator {
    /// Compiled `pattern`s of this call.
    regexes: HashMap<String, Result<Regex, String>>,
    /// Field path prefix for errors (None: paths are relative to the root
    /// and path-less errors are reported as "<nil>").
    field_root: Option<String>,
}

impl Validator {
    pub(super) fn new(field_root: Option<String>) -> Self {
        Validator { regexes: HashMap::new(), field_root }
    }

    fn field_for(&self, name: &str) -> String {
        let name = name.strip_prefix('.').unwrap_or(name);
        match (&self.field_root, name.is_empty()) {
            (Some(r), true) => r.clone(),
            (Some(r), false) => format!("{r}.{name}"),
            (None, true) => NIL_FIELD.to_string(),
            (None, false) => name.to_string(),
        }
    }

    fn verr(&self, t: ErrType, name: &str, bad: &str, detail: &str) -> FieldError {
        mk(t, &self.field_for(name), bad, detail)
    }

    /// Errors that kube-openapi reports without a field (composite errors):
    /// Kubernetes renders them as Invalid on the root path with value "".
    fn composite(&self, detail: &str) -> FieldError {
        mk(ErrType::Invalid, &self.field_for(""), "\"\"", detail)
    }

    fn type_error(&self, path: &str, type_name: &str, actual: &str) -> FieldError {
        let bad = go_quote(actual);
        self.verr(ErrType::TypeInvalid, path, &bad, &format!("{path} in body must be of type {type_name}: {bad}"))
    }

    fn pattern_matches(&mut self, pattern: &str, s: &str) -> Result<bool, String> {
        let compiled = self.regexes.entry(pattern.to_string()).or_insert_with(|| compile_pattern(pattern));
        match compiled {
            Ok(r) => Ok(r.is_match(s)),
            Err(e) => Err(e.clone()),
        }
    }

    pub(super) fn node(&mut self, data: &Value, s: Sch<'_>, path: &str, depth: usize, root: bool) -> Res {
        let mut res = Res::default();
        if depth > MAX_DEPTH {
            res.push(self.verr(
                ErrType::Invalid,
                path,
                "\"\"",
                &format!("schema must not be nested deeper than {MAX_DEPTH} levels"),
            ));
            return res;
        }
        let ty = s.ty();
        let types: Vec<&str> = if s.flag(INT_OR_STRING) {
            vec!["integer", "string"]
        } else if ty.is_empty() {
            Vec::new()
        } else {
            vec![ty]
        };
        let format = effective_format(s.str("format"));
        res.matches += 1;
        if data.is_null() {
            if !types.is_empty() && !s.nullable() {
                res.push(self.type_error(path, &types.join(","), "null"));
            }
            self.check_enum(data, s, path, &mut res);
            return res;
        }
        if let Some(e) = self.check_type(data, &types, format, path) {
            res.push(e);
        }
        self.check_junctors(data, s, path, depth, &mut res);
        match data {
            Value::String(st) => {
                self.check_string(st, s, path, &mut res);
                if !format.is_empty() && !format_valid(&format.replace('-', ""), st) {
                    let bad = go_quote(st);
                    res.push(self.verr(
                        ErrType::TypeInvalid,
                        path,
                        &bad,
                        &format!("{path} in body must be of type {format}: {bad}"),
                    ));
                }
            }
            Value::Number(n) => self.check_number(num_of(n), s, &types, path, &mut res),
            Value::Array(a) => self.check_array(a, s, path, depth, &mut res),
            _ => {}
        }
        self.check_enum(data, s, path, &mut res);
        if let Value::Object(m) = data {
            self.check_object(m, s, path, depth, root, &mut res);
        }
        res
    }

    /// kube-openapi's type validator.
    fn check_type(&self, data: &Value, types: &[&str], format: &str, path: &str) -> Option<FieldError> {
        if types.is_empty() && format.is_empty() {
            return None;
        }
        let (sch_type, data_format, float) = match data {
            Value::Bool(_) => ("boolean", "", None),
            Value::String(_) => ("string", "", None),
            Value::Number(n) => match num_of(n) {
                Num::Int(_) => ("integer", "int64", None),
                Num::Float(f) => ("number", "float64", Some(f)),
            },
            Value::Array(_) => ("array", "", None),
            Value::Object(_) => ("object", "", None),
            Value::Null => return None,
        };
        let has = |t: &str| types.contains(&t);
        let is_float_int = float.is_some_and(is_json_integer) && has("integer");
        let is_int_float = sch_type == "integer" && has("number");
        let str_or_slice = matches!(data, Value::String(_) | Value::Array(_));
        let type_matches = has(sch_type) || is_float_int || is_int_float;
        if !(str_or_slice || format.is_empty() || type_matches || data_format == format) {
            return Some(self.type_error(path, format, data_format));
        }
        let numeric = has("number") || has("integer");
        if str_or_slice && !format.is_empty() && !numeric {
            return None;
        }
        if !type_matches {
            return Some(self.type_error(path, &types.join(","), sch_type));
        }
        None
    }

    fn sub(&mut self, data: &Value, v: &Value, path: &str, depth: usize) -> Res {
        match sch(v) {
            Some(s) => self.node(data, s, path, depth + 1, false),
            None => Res { errs: Vec::new(), matches: 1 },
        }
    }

    /// allOf, anyOf, oneOf and not.
    fn check_junctors(&mut self, data: &Value, s: Sch<'_>, path: &str, depth: usize, res: &mut Res) {
        let qpath = go_quote(path);
        if let Some(list) = s.arr("anyOf").filter(|l| !l.is_empty()) {
            let mut best: Option<Res> = None;
            let mut succeeded = false;
            for v in list {
                let r = self.sub(data, v, path, depth);
                if r.ok() {
                    succeeded = true;
                    best = None;
                    break;
                }
                if best.as_ref().is_none_or(|b| r.matches > b.matches) {
                    best = Some(r);
                }
            }
            if !succeeded {
                res.push(self.composite(&format!("{qpath} must validate at least one schema (anyOf)")));
                if let Some(b) = best {
                    res.merge(b);
                }
            }
        }
        if let Some(list) = s.arr("oneOf").filter(|l| !l.is_empty()) {
            let mut best: Option<Res> = None;
            let mut validated = 0usize;
            for v in list {
                let r = self.sub(data, v, path, depth);
                if r.ok() {
                    validated += 1;
                    best = None;
                    continue;
                }
                if validated == 0 && best.as_ref().is_none_or(|b| r.matches > b.matches) {
                    best = Some(r);
                }
            }
            if validated != 1 {
                let additional = if validated == 0 {
                    "Found none valid".to_string()
                } else {
                    format!("Found {validated} valid alternatives")
                };
                res.push(
                    self.composite(&format!("{qpath} must validate one and only one schema (oneOf). {additional}")),
                );
                if let Some(b) = best {
                    res.merge(b);
                }
            }
        }
        if let Some(list) = s.arr("allOf").filter(|l| !l.is_empty()) {
            let mut validated = 0usize;
            for v in list {
                let r = self.sub(data, v, path, depth);
                if r.ok() {
                    validated += 1;
                }
                res.merge(r);
            }
            if validated != list.len() {
                let additional = if validated == 0 { ". None validated" } else { "" };
                res.push(self.composite(&format!("{qpath} must validate all the schemas (allOf){additional}")));
            }
        }
        if let Some(not) = s.get("not").filter(|v| !v.is_null()) {
            if self.sub(data, not, path, depth).ok() {
                res.push(self.composite(&format!("{qpath} must not validate the schema (not)")));
            }
        }
    }

    fn check_string(&mut self, st: &str, s: Sch<'_>, path: &str, res: &mut Res) {
        res.matches += 1;
        let len = i64::try_from(st.chars().count()).unwrap_or(i64::MAX);
        if let Some(max) = s.i64("maxLength") {
            if len > max {
                res.push(self.verr(ErrType::TooLong, path, "", &format!("may not be longer than {max}")));
                return;
            }
        }
        if let Some(min) = s.i64("minLength") {
            if len < min {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    &go_quote(st),
                    &format!("{path} in body should be at least {min} chars long"),
                ));
                return;
            }
        }
        if let Some(pattern) = s.opt_str("pattern").filter(|p| !p.is_empty()) {
            let detail = match self.pattern_matches(pattern, st) {
                Ok(true) => return,
                Ok(false) => format!("{path} in body should match '{pattern}'"),
                Err(e) => {
                    format!("{path} in body should match '{pattern}, but pattern is invalid: {e}'")
                }
            };
            res.push(self.verr(ErrType::Invalid, path, &go_quote(st), &detail));
        }
    }

    fn check_number(&mut self, n: Num, s: Sch<'_>, types: &[&str], path: &str, res: &mut Res) {
        res.matches += 1;
        let type_name = match types {
            [single] => *single,
            _ => "",
        };
        if type_name == "integer" {
            if let Num::Float(f) = n {
                if int_bound(f).is_none() {
                    res.push(
                        self.composite(&format!("Checked value must be of type integer (default format) in {path}")),
                    );
                }
            }
        }
        let bad = render_num(n);
        if let Some(factor) = s.f64("multipleOf") {
            match (n, int_bound(factor)) {
                (Num::Int(i), Some(fi)) => {
                    if fi <= 0 {
                        res.push(self.verr(
                            ErrType::Invalid,
                            path,
                            &fi.to_string(),
                            &format!("factor MultipleOf declared for {path} must be positive: {fi}"),
                        ));
                    } else if i.checked_rem(fi).is_some_and(|r| r != 0) {
                        res.push(self.verr(
                            ErrType::Invalid,
                            path,
                            &bad,
                            &format!("{path} in body should be a multiple of {fi}"),
                        ));
                    }
                }
                _ => {
                    let d = n.as_f64();
                    if factor <= 0.0 {
                        let f = go_float(factor);
                        res.push(self.verr(
                            ErrType::Invalid,
                            path,
                            &f,
                            &format!("factor MultipleOf declared for {path} must be positive: {f}"),
                        ));
                    } else {
                        let mult = if factor < 1.0 { 1.0 / factor * d } else { d / factor };
                        if !is_json_integer(mult) {
                            res.push(self.verr(
                                ErrType::Invalid,
                                path,
                                &bad,
                                &format!("{path} in body should be a multiple of {}", go_float(factor)),
                            ));
                        }
                    }
                }
            }
        }
        let bounds = [
            ("minimum", "exclusiveMinimum", "should be greater than or equal to", "should be greater than"),
            ("maximum", "exclusiveMaximum", "should be less than or equal to", "should be less than"),
        ];
        for (i, (key_name, exclusive_key, inclusive_msg, exclusive_msg)) in bounds.into_iter().enumerate() {
            let Some(bound) = s.f64(key_name) else {
                continue;
            };
            let exclusive = s.flag(exclusive_key);
            let is_min = i == 0;
            let (fails, shown) = match (n, int_bound(bound)) {
                (Num::Int(x), Some(b)) => (int_fails(x, b, is_min, exclusive), b.to_string()),
                _ => (compare_fails(n.as_f64(), bound, is_min, exclusive), go_float(bound)),
            };
            if fails {
                let msg = if exclusive { exclusive_msg } else { inclusive_msg };
                res.push(self.verr(ErrType::Invalid, path, &bad, &format!("{path} in body {msg} {shown}")));
            }
        }
    }

    fn check_array(&mut self, a: &[Value], s: Sch<'_>, path: &str, depth: usize, res: &mut Res) {
        res.matches += 1;
        match s.get("items") {
            Some(items @ Value::Object(_)) => {
                for (i, v) in a.iter().enumerate() {
                    let r = self.sub(v, items, &index(path, i), depth);
                    res.merge(r);
                }
            }
            Some(Value::Array(tuple)) => {
                for (i, (v, items)) in a.iter().zip(tuple.iter()).enumerate() {
                    let r = self.sub(v, items, &index(path, i), depth);
                    res.merge(r);
                }
            }
            _ => {}
        }
        let size = i64::try_from(a.len()).unwrap_or(i64::MAX);
        if let Some(min) = s.i64("minItems") {
            if size < min {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    &size.to_string(),
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
        }
        if let Some(max) = s.i64("maxItems") {
            if size > max {
                res.push(self.verr(
                    ErrType::TooMany,
                    path,
                    &size.to_string(),
                    &format!("must have at most {max} items"),
                ));
            }
        }
        if s.flag("uniqueItems") {
            let mut seen = HashSet::with_capacity(a.len());
            if !a.iter().all(|v| seen.insert(canon_string(v))) {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    "\"\"",
                    &format!("{path} in body shouldn't contain duplicates"),
                ));
            }
        }
    }

    fn check_enum(&self, data: &Value, s: Sch<'_>, path: &str, res: &mut Res) {
        let Some(list) = s.arr("enum").filter(|l| !l.is_empty()) else {
            return;
        };
        res.matches += 1;
        let usable = |e: &&Value| !depth_exceeds(e, MAX_DEPTH);
        if list.iter().filter(usable).any(|e| enum_matches(data, e)) {
            return;
        }
        let values: Vec<String> = list
            .iter()
            .filter(usable)
            .map(|e| match e {
                Value::String(st) => st.clone(),
                other => to_go_json(other),
            })
            .collect();
        let field = self.field_for(path);
        res.push(e_not_supported(&field, &render_value(data), &values));
    }

    fn check_object(
        &mut self,
        m: &Map<String, Value>,
        s: Sch<'_>,
        path: &str,
        depth: usize,
        root: bool,
        res: &mut Res,
    ) {
        res.matches += 1;
        let skip = |k: &str| root && is_meta_field(k);
        let count = i64::try_from(m.len()).unwrap_or(i64::MAX);
        if let Some(min) = s.i64("minProperties") {
            if count < min {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    &count.to_string(),
                    &format!("{path} in body should have at least {min} properties"),
                ));
            }
        }
        if let Some(max) = s.i64("maxProperties") {
            if count > max {
                res.push(self.verr(
                    ErrType::TooMany,
                    path,
                    &count.to_string(),
                    &format!("must have at most {max} items"),
                ));
            }
        }
        let props = s.props();
        let known = |k: &str| props.is_some_and(|p| p.contains_key(k));
        match s.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                for k in m.keys().filter(|k| !known(k) && !skip(k)) {
                    res.push(self.verr(
                        ErrType::Invalid,
                        path,
                        &go_quote(k),
                        &format!("{} in body is a forbidden property", child(path, k)),
                    ));
                }
            }
            Some(ap @ Value::Object(_)) => {
                for (k, v) in m.iter().filter(|(k, _)| !known(k) && !skip(k)) {
                    let r = self.sub(v, ap, &child(path, k), depth);
                    res.merge(r);
                }
            }
            _ => {}
        }
        if let Some(props) = props {
            for (name, ps) in props {
                if skip(name) {
                    continue;
                }
                if let Some(v) = m.get(name) {
                    let r = self.sub(v, ps, &child(path, name), depth);
                    res.merge(r);
                }
            }
        }
        for k in s.strings("required") {
            if !skip(k) && !m.contains_key(k) {
                res.push(e_required(&self.field_for(&child(path, k)), ""));
            }
        }
    }
}

fn compare_fails(x: f64, bound: f64, is_min: bool, exclusive: bool) -> bool {
    match (is_min, exclusive) {
        (true, false) => x < bound,
        (true, true) => x <= bound,
        (false, false) => x > bound,
        (false, true) => x >= bound,
    }
}

fn int_fails(x: i64, bound: i64, is_min: bool, exclusive: bool) -> bool {
    match (is_min, exclusive) {
        (true, false) => x < bound,
        (true, true) => x <= bound,
        (false, false) => x > bound,
        (false, true) => x >= bound,
    }
}
