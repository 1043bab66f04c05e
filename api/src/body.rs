//! Request bodies: size limit, media type, JSON, YAML or protobuf decoding.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::status::ApiError;

/// Kubernetes' request body limit (3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// What a body's `Content-Type` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    Yaml,
    Protobuf,
    JsonPatch,
    MergePatch,
    StrategicMergePatch,
    ApplyPatch,
}

pub fn media(content_type: Option<&str>) -> Result<Media, ApiError> {
    let raw = content_type.unwrap_or("application/json");
    let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Ok(match essence.as_str() {
        "application/json" | "" => Media::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => Media::Yaml,
        "application/vnd.kubernetes.protobuf" => Media::Protobuf,
        "application/json-patch+json" => Media::JsonPatch,
        "application/merge-patch+json" => Media::MergePatch,
        "application/strategic-merge-patch+json" => Media::StrategicMergePatch,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Media::ApplyPatch,
        _ => return Err(ApiError::unsupported_media_type(raw)),
    })
}

/// How much of an oversized body is read and dropped so the client sees the 413 (an
/// HTTP/2 stream reset mid-upload reaches curl and Go clients as a transport error).
const DRAIN_LIMIT: usize = 64 << 20;

/// Read the whole body, refusing more than [`MAX_BODY`] bytes with 413.
pub async fn read<B>(body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(format!("the request body is larger than the limit of {MAX_BODY} bytes")));
    }
    Ok(buf.freeze())
}

/// Decode a JSON, YAML or protobuf object body (one document). `expected` is the
/// (apiVersion, kind) the route takes, for a protobuf envelope that leaves its type empty.
pub fn decode_object(media: Media, bytes: &[u8], expected: Option<(&str, &str)>) -> Result<Value, ApiError> {
    let v: Value = match media {
        Media::Json | Media::MergePatch | Media::StrategicMergePatch | Media::JsonPatch => {
            serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?
        }
        Media::Yaml | Media::ApplyPatch => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("error decoding YAML body: not UTF-8"))?;
            let y: Value = serde_yaml_ng::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?;
            y
        }
        Media::Protobuf => crate::proto::decode_body(bytes, expected)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}")))?,
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_bad_bodies() {
        assert_eq!(media(Some("application/json; charset=utf-8")).unwrap(), Media::Json);
        assert_eq!(media(Some("application/apply-patch+yaml")).unwrap(), Media::ApplyPatch);
        assert_eq!(media(Some("text/html")).unwrap_err().code, 415);
        assert_eq!(decode_object(Media::Json, b"{", None).unwrap_err().code, 400);
        assert_eq!(decode_object(Media::Yaml, b"a: [", None).unwrap_err().code, 400);
        assert_eq!(decode_object(Media::Yaml, b"a: 1", None).unwrap(), serde_json::json!({"a": 1}));
        assert_eq!(decode_object(Media::Protobuf, b"{}", None).unwrap_err().code, 400);
    }
}
