//! Every refusal rule, one test each, which symlinks the walk follows, and real wipes: with a
//! symlink pointing outside, and with the dir swapped for a symlink after it was opened.

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
    assert!(
        below.dir.is_none(),
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
    let bytes = wipe(target.dir.unwrap().fd).unwrap();

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

/// `<tmp>/outside/precious`, a file no wipe may touch.
fn precious(tmp: &Path) -> PathBuf {
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), "keep me").unwrap();
    outside
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_opened_dir_is_wiped_even_when_a_symlink_took_its_place() {
    let (tmp, b) = scratch();
    let outside = precious(tmp.path());
    let data = tmp.path().join("data/db");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/old"), "1234").unwrap();

    let target = check(&data, &b).unwrap();
    // What a service user owning data/ can do while the watcher takes its time to stop.
    std::fs::rename(&data, tmp.path().join("data/db.moved")).unwrap();
    symlink(&outside, &data).unwrap();
    let bytes = wipe(target.dir.unwrap().fd).unwrap();

    assert_eq!(bytes, 4);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("data/db.moved"))
            .unwrap()
            .count(),
        0,
        "the directory that was opened is the one emptied"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me"
    );
}

#[test]
fn a_symlink_in_a_directory_others_may_write_is_refused() {
    let (tmp, b) = scratch();
    let outside = precious(tmp.path());
    let shared = tmp.path().join("data/shared");
    std::fs::create_dir_all(&shared).unwrap();
    symlink(&outside, shared.join("db")).unwrap();
    set_mode(&shared, 0o777);
    let b = bounds(&b.state_dir, None);
    assert_eq!(
        refused_by(shared.join("db"), &b),
        DataDirRule::NoForeignSymlink
    );
    assert_eq!(
        refused_by(shared.join("db/below"), &b),
        DataDirRule::NoForeignSymlink,
        "nor is such a link followed on the way to a dir below it"
    );
}

#[test]
fn our_own_symlinks_are_followed_in_a_private_or_sticky_directory() {
    let (tmp, b) = scratch();
    std::fs::create_dir_all(tmp.path().join("data/real/db")).unwrap();
    symlink("real", tmp.path().join("data/alias")).unwrap();
    symlink("../data/real/db", tmp.path().join("data/up-and-down")).unwrap();
    for (link, expected) in [
        ("data/alias/db", "data/real/db"),
        ("data/up-and-down", "data/real/db"),
    ] {
        let target = check(&tmp.path().join(link), &b).unwrap();
        let real = target.dir.expect("opened").real;
        assert_eq!(
            real,
            tmp.path().join(expected).canonicalize().unwrap(),
            "{link}"
        );
    }
    let sticky = tmp.path().join("data/sticky");
    std::fs::create_dir_all(&sticky).unwrap();
    symlink(tmp.path().join("data/real/db"), sticky.join("db")).unwrap();
    set_mode(&sticky, 0o1777);
    assert!(check(&sticky.join("db"), &b).unwrap().dir.is_some());
}

#[test]
#[ignore = "needs root"]
fn a_symlink_a_service_user_made_in_its_own_directory_is_refused() {
    let (tmp, b) = scratch();
    let outside = precious(tmp.path());
    let service = tmp.path().join("data/service");
    std::fs::create_dir_all(&service).unwrap();
    symlink(&outside, service.join("db")).unwrap();
    std::os::unix::fs::chown(&service, Some(65534), None).unwrap();
    assert_eq!(
        refused_by(service.join("db"), &b),
        DataDirRule::NoForeignSymlink,
        "the directory is the service user's: the link could be theirs"
    );
    std::os::unix::fs::chown(&service, Some(0), None).unwrap();
    std::os::unix::fs::lchown(service.join("db"), Some(65534), None).unwrap();
    assert_eq!(
        refused_by(service.join("db"), &b),
        DataDirRule::NoForeignSymlink,
        "the link is the service user's"
    );
}
