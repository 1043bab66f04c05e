//! Tests of the Go-compatible rendering helpers.

use serde_json::json;

use super::super::render::{go_float, go_json_float, go_quote, render_value, to_go_json};
use super::*;

#[test]
fn go_rendering() {
    assert_eq!(go_float(10.0), "10");
    assert_eq!(go_float(0.5), "0.5");
    assert_eq!(go_float(123456.0), "123456");
    assert_eq!(go_float(1e6), "1e+06");
    assert_eq!(go_float(1.5e-5), "1.5e-05");
    assert_eq!(go_float(-0.0001), "-0.0001");
    assert_eq!(go_json_float(1.0), "1");
    assert_eq!(go_json_float(1e21), "1e+21");
    assert_eq!(go_json_float(1e-7), "1e-7");
    assert_eq!(go_json_float(123456789.0), "123456789");
    assert_eq!(go_quote("a\"b\\\n\u{1}é\u{200b}"), "\"a\\\"b\\\\\\n\\x01é\\u200b\"");
    assert_eq!(to_go_json(&json!({"b": [1, 2.5, "<"], "a": null})), r#"{"a":null,"b":[1,2.5,"\u003c"]}"#);
    assert_eq!(
        render_value(&json!([1, "x", {"k": null}])),
        "[]interface {}{1, \"x\", map[string]interface {}{\"k\":interface {}(nil)}}"
    );
    assert_eq!(
        FieldError { reason: "FieldValueRequired", field: "spec.a".into(), message: "Required value".into() }
            .to_string(),
        "spec.a: Required value"
    );
}
