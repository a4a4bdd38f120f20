//! Every refusal rule, one test each, and a real wipe with a symlink pointing outside.

use super::*;
use std::os::unix::fs::symlink;
use troupe::config::DataDirRule;

fn bounds(state_dir: &Path, data_root: Option<&Path>) -> Bounds {
    Bounds {
        data_root: data_root.map(Path::to_path_buf),
        state_dir: state_dir.to_path_buf(),
    }
}

/// A scratch tree: `<tmp>/state` (the agent's state dir) and `<tmp>/data` (its data root).
fn scratch() -> (tempfile::TempDir, Bounds) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    let b = bounds(&tmp.path().join("state"), Some(&tmp.path().join("data")));
    (tmp, b)
}

fn refused_by(path: impl AsRef<Path>, bounds: &Bounds) -> DataDirRule {
    match check(path.as_ref(), bounds) {
        Ok(target) => panic!("{} was accepted: {target:?}", path.as_ref().display()),
        Err(refusal) => {
            let text = refusal.to_string();
            assert!(
                text.contains(refusal.rule.name()),
                "the refusal names its rule: {text}"
            );
            refusal.rule
        }
    }
}

#[test]
fn a_relative_path_is_refused() {
    let (_tmp, b) = scratch();
    assert_eq!(refused_by("data/x", &b), DataDirRule::Absolute);
}

#[test]
fn a_path_with_dotdot_is_refused() {
    let (tmp, b) = scratch();
    let sneaky = tmp.path().join("data/x/../../state");
    assert_eq!(refused_by(sneaky, &b), DataDirRule::NoParentComponents);
}

#[test]
fn the_root_is_refused() {
    let b = bounds(Path::new("/nonexistent/state"), None);
    assert_eq!(refused_by("/", &b), DataDirRule::NotRoot);
    assert_eq!(refused_by("//./", &b), DataDirRule::NotRoot);
}

#[test]
fn top_level_system_dirs_are_refused_but_not_what_is_below_them() {
    let b = bounds(Path::new("/nonexistent/state"), None);
    for dir in troupe::config::SYSTEM_DIRS {
        assert_eq!(refused_by(dir, &b), DataDirRule::NotSystemDir, "{dir}");
        assert_eq!(
            refused_by(format!("{dir}/"), &b),
            DataDirRule::NotSystemDir,
            "{dir}/"
        );
    }
    let below = check(Path::new("/var/lib/troupe-test-nonexistent/data"), &b).unwrap();
    assert_eq!(
        below.real, None,
        "a missing dir is accepted, with nothing to wipe"
    );
}

#[test]
fn a_dir_outside_data_root_is_refused() {
    let (tmp, b) = scratch();
    std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
    assert_eq!(
        refused_by(tmp.path().join("elsewhere"), &b),
        DataDirRule::UnderDataRoot
    );
    assert_eq!(
        refused_by(tmp.path().join("data"), &b),
        DataDirRule::UnderDataRoot,
        "data_root itself is not below it"
    );
    std::fs::create_dir_all(tmp.path().join("data/neo4j")).unwrap();
    assert!(check(&tmp.path().join("data/neo4j"), &b).is_ok());
}

#[test]
fn a_symlink_leading_out_of_data_root_is_refused() {
    let (tmp, b) = scratch();
    std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
    symlink(tmp.path().join("elsewhere"), tmp.path().join("data/link")).unwrap();
    assert_eq!(
        refused_by(tmp.path().join("data/link"), &b),
        DataDirRule::UnderDataRoot
    );
}

#[test]
fn a_symlink_to_a_system_dir_is_refused() {
    let (tmp, _) = scratch();
    symlink("/etc", tmp.path().join("etc-link")).unwrap();
    let b = bounds(&tmp.path().join("state"), None);
    assert_eq!(
        refused_by(tmp.path().join("etc-link"), &b),
        DataDirRule::NotSystemDir
    );
}

#[test]
fn the_state_dir_is_refused() {
    let (tmp, _) = scratch();
    let b = bounds(&tmp.path().join("state"), None);
    assert_eq!(
        refused_by(tmp.path().join("state"), &b),
        DataDirRule::NotStateDir
    );
    std::fs::create_dir_all(tmp.path().join("state/etcd/data")).unwrap();
    assert!(
        check(&tmp.path().join("state/etcd/data"), &b).is_ok(),
        "a watcher's dir inside the state dir is fine"
    );
}

#[test]
fn an_ancestor_of_the_state_dir_is_refused() {
    let (tmp, _) = scratch();
    let b = bounds(&tmp.path().join("state"), None);
    assert_eq!(refused_by(tmp.path(), &b), DataDirRule::NotStateDir);
}

#[test]
fn a_file_is_refused() {
    let (tmp, b) = scratch();
    std::fs::write(tmp.path().join("data/file"), "x").unwrap();
    assert_eq!(
        refused_by(tmp.path().join("data/file"), &b),
        DataDirRule::IsDirectory
    );
}

#[test]
fn wiping_empties_the_dir_and_never_follows_a_symlink() {
    let (tmp, b) = scratch();
    let data = tmp.path().join("data/db");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), "keep me").unwrap();
    std::fs::write(data.join("a"), "12345").unwrap();
    std::fs::write(data.join("sub/b"), "123").unwrap();
    std::fs::write(data.join("sub/deeper/c"), "12").unwrap();
    std::fs::write(data.join(".hidden"), "1").unwrap();
    symlink(&outside, data.join("link-to-dir")).unwrap();
    symlink(outside.join("precious"), data.join("sub/link-to-file")).unwrap();

    let target = check(&data, &b).unwrap();
    let bytes = wipe(target.real.as_deref().unwrap()).unwrap();

    assert_eq!(
        bytes,
        5 + 3 + 2 + 1,
        "regular files only; links count nothing"
    );
    assert!(data.is_dir(), "the dir itself stays");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me",
        "a symlink's target survives"
    );
}
