//! Tests of the data-directory lock.

use super::*;

#[test]
fn a_second_lock_on_the_same_directory_is_refused_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataLock::acquire(dir.path()).unwrap();
    let err = DataLock::acquire(dir.path()).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
    assert!(message.contains("stop it first"), "{message}");
    drop(first);
    assert!(DataLock::acquire(dir.path()).is_ok(), "released on drop");
}
