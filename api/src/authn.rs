//! Who is calling: x509 client certificates (CN = user, O = groups), or a bearer token
//! (ServiceAccount JWT or bootstrap token, see [`crate::tokens`]). Neither → 401.

use x509_parser::prelude::{FromDer, X509Certificate};

/// An authenticated user, as `kubectl auth whoami` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
}

/// The user a verified client certificate names, or `None` when it names none.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let username = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if username.is_empty() {
        return None;
    }
    let mut groups: Vec<String> =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    groups.push("system:authenticated".to_string());
    Some(UserInfo { username, uid: String::new(), groups })
}

/// The user of a bearer token, or `None` (→ 401) when it is not valid now.
pub(crate) async fn from_bearer(api: &crate::serve::Api, token: &str) -> Option<UserInfo> {
    use crate::storage::{get_core, live_uid};
    let get = |plural: &'static str, ns: String, name: String| async move {
        get_core(api, plural, &ns, &name).await.ok().flatten()
    };
    let now = jiff::Timestamp::now().as_second();
    if let Some((id, secret)) = crate::tokens::parse_bootstrap(token) {
        let obj = get("secrets", "kube-system".into(), format!("bootstrap-token-{id}")).await?;
        return crate::tokens::bootstrap_user(&obj, id, secret, now);
    }
    let claims = crate::tokens::verify(api.tokens.as_ref()?, token, &[crate::tokens::ISSUER])?;
    let live = |obj: Option<serde_json::Value>, uid: &str| obj.as_ref().and_then(live_uid).as_deref() == Some(uid);
    let ns = claims.kube.namespace.clone();
    let sa = &claims.kube.serviceaccount;
    if !live(get("serviceaccounts", ns.clone(), sa.name.clone()).await, &sa.uid) {
        return None;
    }
    if let Some(p) = &claims.kube.pod {
        if !live(get("pods", ns.clone(), p.name.clone()).await, &p.uid) {
            return None;
        }
    }
    if let Some(s) = &claims.kube.secret {
        if !live(get("secrets", ns.clone(), s.name.clone()).await, &s.uid) {
            return None;
        }
    }
    Some(claims.user())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let u = user_from_cert(cert.der()).unwrap();
        assert_eq!(u.username, "alice");
        assert_eq!(u.groups, vec!["system:masters".to_string(), "system:authenticated".to_string()]);
        assert!(user_from_cert(b"not a certificate").is_none());
    }
}
