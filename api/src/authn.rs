//! Who is calling: x509 client certificates (CN = user, O = groups). Bearer tokens
//! (ServiceAccount JWTs, bootstrap tokens) are not accepted yet and get 401.

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
