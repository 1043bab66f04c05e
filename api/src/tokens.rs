//! Bearer tokens: ServiceAccount JWTs (issued by the TokenRequest API, ES256-signed with
//! the cluster's service-account key, audience and expiry checked, the ServiceAccount —
//! and a bound Pod or Secret — must still exist with the same uid) and bootstrap tokens
//! (`<id>.<secret>` matching a `bootstrap.kubernetes.io/token` Secret in kube-system).

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::authn::UserInfo;

/// Kubernetes' default issuer (and API audience) for a cluster domain of cluster.local.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Kubernetes' default and bounds for `expirationSeconds` (10 min .. 2^32 s; 1 h default).
pub const DEFAULT_EXPIRATION: i64 = 3600;
pub const MIN_EXPIRATION: i64 = 600;

/// The service-account signing key pair.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(ES256)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the service-account key is not an EC P-256 PEM key: {0}")]
    Key(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

impl TokenKeys {
    /// From `sa.key` (PKCS#8 PEM) and `sa.pub` (SPKI PEM).
    pub fn from_pem(private_pem: &str, public_pem: &str) -> Result<TokenKeys, TokenError> {
        Ok(TokenKeys {
            encoding: EncodingKey::from_ec_pem(private_pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?,
        })
    }
}

/// The object a token is bound to (its deletion invalidates the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secret: Option<Ref>,
}

/// The claims of a ServiceAccount token, as Kubernetes writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub iss: String,
    pub jti: String,
    pub sub: String,
    #[serde(rename = "kubernetes.io")]
    pub kube: KubeClaims,
}

impl Claims {
    pub fn user(&self) -> UserInfo {
        let ns = &self.kube.namespace;
        UserInfo {
            username: format!("system:serviceaccount:{ns}:{}", self.kube.serviceaccount.name),
            uid: self.kube.serviceaccount.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// Sign a token for these claims.
pub fn issue(keys: &TokenKeys, claims: &Claims) -> Result<String, TokenError> {
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &keys.encoding)
        .map_err(|e| TokenError::Sign(e.to_string()))
}

/// Check a token's signature, issuer, audience and lifetime; the caller checks that the
/// objects it names still exist.
pub fn verify(keys: &TokenKeys, token: &str, audiences: &[&str]) -> Option<Claims> {
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    v.leeway = 60;
    jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v).ok().map(|d| d.claims)
}

/// `abcdef.0123456789abcdef` → (id, secret), Kubernetes' bootstrap token format.
pub fn parse_bootstrap(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Constant-time comparison (token secrets).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user of a bootstrap token, from its Secret (`bootstrap-token-<id>` in kube-system);
/// `now` is Unix seconds.
pub fn bootstrap_user(secret_obj: &Value, id: &str, secret: &str, now: i64) -> Option<UserInfo> {
    if secret_obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token") {
        return None;
    }
    let data = |k: &str| -> Option<String> {
        let b64 = secret_obj.pointer(&format!("/data/{k}")).and_then(Value::as_str)?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        String::from_utf8(raw).ok()
    };
    if data("token-id")? != id || !same(data("token-secret")?.as_bytes(), secret.as_bytes()) {
        return None;
    }
    if data("usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(exp) = data("expiration") {
        let t: jiff::Timestamp = exp.parse().ok()?;
        if t.as_second() <= now {
            return None;
        }
    }
    if secret_obj.pointer("/metadata/deletionTimestamp").is_some() {
        return None;
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    for g in data("auth-extra-groups").unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()) {
        if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    groups.push("system:authenticated".into());
    Some(UserInfo { username: format!("system:bootstrap:{id}"), uid: String::new(), groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> TokenKeys {
        let k = rcgen::KeyPair::generate().unwrap();
        TokenKeys::from_pem(&k.serialize_pem(), &k.public_key_pem()).unwrap()
    }

    fn claims(aud: &str, exp_in: i64) -> Claims {
        let now = jiff::Timestamp::now().as_second();
        Claims {
            aud: vec![aud.into()],
            exp: now + exp_in,
            iat: now,
            nbf: now,
            iss: ISSUER.into(),
            jti: "j".into(),
            sub: "system:serviceaccount:default:builder".into(),
            kube: KubeClaims {
                namespace: "default".into(),
                serviceaccount: Ref { name: "builder".into(), uid: "u1".into() },
                pod: None,
                secret: None,
            },
        }
    }

    #[test]
    fn tokens_verify_only_with_the_key_audience_and_lifetime() {
        let (k, other) = (keys(), keys());
        let t = issue(&k, &claims(ISSUER, 600)).unwrap();
        let c = verify(&k, &t, &[ISSUER]).unwrap();
        assert_eq!(c.user().username, "system:serviceaccount:default:builder");
        assert_eq!(c.user().groups[1], "system:serviceaccounts:default");
        assert!(verify(&other, &t, &[ISSUER]).is_none(), "another key");
        assert!(verify(&k, &t, &["vault"]).is_none(), "another audience");
        let old = issue(&k, &claims(ISSUER, -3600)).unwrap();
        assert!(verify(&k, &old, &[ISSUER]).is_none(), "expired");
        let mut tampered = t.clone();
        tampered.insert(t.len() / 2, 'A');
        assert!(verify(&k, &tampered, &[ISSUER]).is_none());
        assert!(verify(&k, "not.a.jwt", &[ISSUER]).is_none());
    }

    #[test]
    fn bootstrap_tokens_match_their_secret() {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let secret = json!({"type": "bootstrap.kubernetes.io/token", "data": {
            "token-id": b("abcdef"), "token-secret": b("0123456789abcdef"),
            "usage-bootstrap-authentication": b("true"), "expiration": b("2099-01-01T00:00:00Z"),
            "auth-extra-groups": b("system:bootstrappers:kubeadm:default-node-token,system:masters")}});
        assert_eq!(parse_bootstrap("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        assert_eq!(parse_bootstrap("ABCDEF.0123456789abcdef"), None);
        let u = bootstrap_user(&secret, "abcdef", "0123456789abcdef", 0).unwrap();
        assert_eq!(u.username, "system:bootstrap:abcdef");
        // Only system:bootstrappers:* extra groups are honoured.
        assert_eq!(
            u.groups,
            ["system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token", "system:authenticated"]
        );
        assert!(bootstrap_user(&secret, "abcdef", "0123456789abcdeX", 0).is_none());
        assert!(bootstrap_user(&secret, "abcdef", "0123456789abcdef", 5_000_000_000).is_none(), "expired");
    }
}
