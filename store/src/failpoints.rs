//! Named failpoints (the `fail` crate) around the store's durable steps, for the chaos
//! harness: `store::log::append`, `store::log::purge`, `store::apply`,
//! `store::snapshot::build`, `store::snapshot::install` and `store::compact`.
//!
//! They exist only in debug builds — the builds the tests run; in a release build the
//! [`failpoint!`] macro expands to nothing, and [`arm_from_env`] refuses a configuration
//! instead of silently ignoring it. A master arms them at start from
//! `KEELSON_FAILPOINTS="name=actions;name=actions"`, in the `fail` crate's action syntax
//! (`return`, `panic(msg)`, `sleep(ms)`, `5%return`, `3*return->off` …). `return` makes
//! the step fail with a storage error; openraft then stops Raft, and the server exits
//! (fail-stop, as etcd does on a failed WAL write).

/// Every failpoint the store defines.
pub const NAMES: [&str; 6] = [
    "store::log::append",
    "store::log::purge",
    "store::apply",
    "store::snapshot::build",
    "store::snapshot::install",
    "store::compact",
];

/// The environment variable a master reads its failpoints from.
pub const ENV: &str = "KEELSON_FAILPOINTS";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FailpointError {
    #[error("{ENV}: this is a release build; failpoints exist only in debug (test) builds")]
    Release,
    #[error("{ENV}: {0:?} is not NAME=ACTIONS")]
    Syntax(String),
    #[error("{ENV}: unknown failpoint {0:?}; known: {known}", known = NAMES.join(", "))]
    Unknown(String),
    #[error("{ENV}: bad actions for {name}: {message}")]
    Actions { name: String, message: String },
}

/// Parse `name=actions;name=actions` (empty parts ignored).
pub fn parse(spec: &str) -> Result<Vec<(String, String)>, FailpointError> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, actions) = part.split_once('=').ok_or_else(|| FailpointError::Syntax(part.to_string()))?;
        let (name, actions) = (name.trim(), actions.trim());
        if actions.is_empty() {
            return Err(FailpointError::Syntax(part.to_string()));
        }
        if !NAMES.contains(&name) {
            return Err(FailpointError::Unknown(name.to_string()));
        }
        out.push((name.to_string(), actions.to_string()));
    }
    Ok(out)
}

/// Arm the failpoints `KEELSON_FAILPOINTS` names; returns what was armed.
pub fn arm_from_env() -> Result<Vec<(String, String)>, FailpointError> {
    match std::env::var(ENV) {
        Ok(spec) if !spec.trim().is_empty() => arm(&spec),
        _ => Ok(Vec::new()),
    }
}

/// Arm the failpoints of `spec` (see [`parse`]).
pub fn arm(spec: &str) -> Result<Vec<(String, String)>, FailpointError> {
    let parsed = parse(spec)?;
    if !cfg!(debug_assertions) {
        return Err(FailpointError::Release);
    }
    for (name, actions) in &parsed {
        fail::cfg(name.clone(), actions).map_err(|message| FailpointError::Actions { name: name.clone(), message })?;
        tracing::warn!(failpoint = %name, actions = %actions, "failpoint armed");
    }
    Ok(parsed)
}

/// A failpoint: in debug builds, `fail::fail_point!` with `return` mapped to `$err`
/// (logged as "failpoint fired"); nothing in release builds.
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal, $err:expr) => {
        #[cfg(debug_assertions)]
        fail::fail_point!($name, |_| {
            tracing::error!(failpoint = $name, "failpoint fired: failing this step");
            Err($err)
        });
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse("store::apply=return; store::compact=5%panic(x)").unwrap(),
            vec![("store::apply".into(), "return".into()), ("store::compact".into(), "5%panic(x)".into())]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("store::apply"), Err(FailpointError::Syntax("store::apply".into())));
        assert_eq!(parse("store::apply="), Err(FailpointError::Syntax("store::apply=".into())));
        assert_eq!(parse("store::nope=return"), Err(FailpointError::Unknown("store::nope".into())));
    }

    #[test]
    fn bad_actions_are_refused() {
        match arm("store::snapshot::build=explode(") {
            Err(FailpointError::Actions { name, .. }) => assert_eq!(name, "store::snapshot::build"),
            other => panic!("armed a bad action: {other:?}"),
        }
    }
}
