//! The garbage collector's decisions (upstream `attemptToDeleteItem`,
//! `processDeletingDependentsItem`), pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// What an owner reference points at, as far as the collector found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerState {
    /// Not there (404, or another object with that name: a different uid).
    Absent,
    /// There, and deleting its dependents first (`foregroundDeletion`).
    WaitingForDependents,
    /// There.
    Solid,
}

/// What to do with a dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Drop these owner references (dangling ones and those of owners waiting for their
    /// dependents: the dependent stays for its solid owners).
    RemoveRefs(Vec<String>),
    /// Delete it with this propagation policy.
    Delete(&'static str),
}

/// `attemptToDeleteItem` for an object with these owner references (`states` in the same
/// order), its own finalizers, and whether it has dependents itself.
pub fn attempt(
    refs: &[OwnerReference],
    states: &[OwnerState],
    finalizers: &[String],
    has_dependents: bool,
) -> Decision {
    if refs.is_empty() {
        return Decision::Nothing;
    }
    let uids = |want: &OwnerState| -> Vec<String> {
        refs.iter().zip(states).filter(|(_, s)| *s == want).map(|(r, _)| r.uid.clone()).collect()
    };
    let solid = uids(&OwnerState::Solid);
    let dangling = uids(&OwnerState::Absent);
    let waiting = uids(&OwnerState::WaitingForDependents);
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Decision::Nothing;
        }
        return Decision::RemoveRefs(dangling.into_iter().chain(waiting).collect());
    }
    if !waiting.is_empty() && has_dependents {
        // Its owner waits for it: it deletes its own dependents first.
        return Decision::Delete("Foreground");
    }
    let policy = if finalizers.iter().any(|f| f == ORPHAN) {
        "Orphan"
    } else if finalizers.iter().any(|f| f == FOREGROUND) {
        "Foreground"
    } else {
        "Background"
    };
    Decision::Delete(policy)
}

/// The owner references of `refs` other than those to `uids`.
pub fn without(refs: &[OwnerReference], uids: &[String]) -> Vec<OwnerReference> {
    refs.iter().filter(|r| !uids.contains(&r.uid)).cloned().collect()
}

/// `finalizers` without `f`.
pub fn drop_finalizer(finalizers: &[String], f: &str) -> Vec<String> {
    finalizers.iter().filter(|x| x.as_str() != f).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uid: &str) -> OwnerReference {
        OwnerReference {
            uid: uid.into(),
            name: uid.into(),
            kind: "ReplicaSet".into(),
            api_version: "apps/v1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn dependents_of_gone_owners_are_deleted_by_their_own_policy() {
        use OwnerState::*;
        assert_eq!(attempt(&[r("a")], &[Absent], &[], false), Decision::Delete("Background"));
        assert_eq!(attempt(&[r("a")], &[Absent], &[ORPHAN.into()], false), Decision::Delete("Orphan"));
        assert_eq!(attempt(&[r("a")], &[Absent], &[FOREGROUND.into()], true), Decision::Delete("Foreground"));
        assert_eq!(attempt(&[r("a"), r("b")], &[Absent, Absent], &[], false), Decision::Delete("Background"));
    }

    #[test]
    fn a_solid_owner_keeps_its_dependent() {
        use OwnerState::*;
        assert_eq!(attempt(&[r("a")], &[Solid], &[], false), Decision::Nothing);
        assert_eq!(attempt(&[r("a"), r("b")], &[Solid, Absent], &[], false), Decision::RemoveRefs(vec!["b".into()]));
        assert_eq!(
            attempt(&[r("a"), r("b")], &[WaitingForDependents, Solid], &[], false),
            Decision::RemoveRefs(vec!["a".into()])
        );
        assert_eq!(attempt(&[], &[], &[], false), Decision::Nothing);
    }

    #[test]
    fn foreground_owners_delete_their_dependents_first() {
        use OwnerState::*;
        // A dependent with dependents of its own goes foreground too; a leaf in the background.
        assert_eq!(attempt(&[r("a")], &[WaitingForDependents], &[], true), Decision::Delete("Foreground"));
        assert_eq!(attempt(&[r("a")], &[WaitingForDependents], &[], false), Decision::Delete("Background"));
    }

    #[test]
    fn helpers_filter() {
        assert_eq!(without(&[r("a"), r("b")], &["a".into()]), vec![r("b")]);
        assert_eq!(drop_finalizer(&["x".into(), ORPHAN.into()], ORPHAN), vec!["x".to_string()]);
    }
}
