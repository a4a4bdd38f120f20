//! Rendering against a 3-node peer list: every profile against its golden files, every
//! template error, and the atomic writer.

use super::write::{preview, write_all};
use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use troupe::config::Profile;
use troupe::protocol::{ClusterInfo, NodeRef, Peer};

/// node-a, node-b, node-c on 10.0.0.11-13; this node is node-b (index 2).
fn peer_list() -> PeerList {
    let peer = |i: usize, name: &str| Peer {
        id: format!("00000000-0000-4000-8000-00000000000{i}").into(),
        name: name.into(),
        address: format!("10.0.0.1{i}").into(),
        index: i,
        endpoints: BTreeMap::from([("control".into(), format!("tcp://10.0.0.1{i}:5555").into())]),
    };
    PeerList {
        cluster: ClusterInfo {
            name: "lab".into(),
            size: 3,
        },
        me: NodeRef {
            id: "00000000-0000-4000-8000-000000000002".into(),
            name: "node-b".into(),
            address: "10.0.0.12".into(),
            index: 2,
        },
        peers: vec![peer(1, "node-a"), peer(2, "node-b"), peer(3, "node-c")],
    }
}

fn inputs(state_dir: &Path) -> RenderInputs {
    RenderInputs {
        state_dir: state_dir.to_path_buf(),
        config_dir: None,
        env: BTreeMap::from([("TROUPE_TEST".to_string(), "from-env".to_string())]),
    }
}

fn profile_watcher(profile: Profile) -> WatcherConfig {
    let mut w = WatcherConfig::new(profile.name(), "true");
    w.apply("profile", &json!(profile.name())).unwrap();
    w.apply(
        "profile_dir",
        &json!(format!("/srv/troupe/{}", profile.name())),
    )
    .unwrap();
    w
}

/// A watcher rendering `source` (written into `dir`) to `dir/<dest>`.
fn template_watcher(dir: &Path, name: &str, source: &str, dest: &str) -> WatcherConfig {
    let path = dir.join(format!("{name}.j2"));
    std::fs::write(&path, source).unwrap();
    let mut w = WatcherConfig::new(name, "true");
    w.apply(
        "template",
        &json!([{"source": path, "dest": dir.join(dest)}]),
    )
    .unwrap();
    w
}

fn render_one(w: WatcherConfig) -> Result<Vec<RenderedFile>, TemplateError> {
    render_all(
        &[w],
        &peer_list().into(),
        &inputs(Path::new("/var/lib/troupe")),
    )
}

/// Compares a rendered file with `golden/<profile>/<variant>/<file name>` (`variant` "" for
/// the plain renderings); TROUPE_UPDATE_GOLDEN=1 rewrites the golden file instead.
fn assert_golden(profile: Profile, variant: &str, file: &RenderedFile) {
    let name = file.path.file_name().unwrap().to_string_lossy();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/configure/golden")
        .join(profile.name())
        .join(variant)
        .join(name.as_ref());
    if std::env::var_os("TROUPE_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &file.text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (TROUPE_UPDATE_GOLDEN=1 writes it)",
            golden.display()
        )
    });
    assert_eq!(
        file.text,
        expected,
        "{} differs from {}",
        file.path.display(),
        golden.display()
    );
}

fn render_profile(profile: Profile) -> Vec<RenderedFile> {
    let files = render_one(profile_watcher(profile)).unwrap();
    for file in &files {
        assert_golden(profile, "", file);
    }
    files
}

fn assert_has_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "missing line {line:?} in\n{text}"
        );
    }
}

fn assert_sets(text: &str, keys: &[&str]) {
    for key in keys {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key}="))),
            "{key} is not set in\n{text}"
        );
    }
}

#[test]
fn neo4j_profile_matches_golden_and_sets_the_cluster_settings() {
    let files = render_profile(Profile::Neo4j);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, Path::new("/srv/troupe/neo4j/neo4j.conf"));
    let text = &files[0].text;
    assert_sets(
        text,
        &[
            "server.discovery.advertised_address",
            "dbms.cluster.discovery.endpoints",
            "server.default_listen_address",
            "server.default_advertised_address",
            "server.cluster.advertised_address",
            "server.cluster.raft.advertised_address",
            "initial.dbms.default_primaries_count",
        ],
    );
    assert_has_lines(
        text,
        &[
            "server.discovery.advertised_address=10.0.0.12:5000",
            "dbms.cluster.discovery.endpoints=10.0.0.11:5000,10.0.0.12:5000,10.0.0.13:5000",
            "initial.dbms.default_primaries_count=3",
        ],
    );
}

#[test]
fn janusgraph_and_titan_profiles_point_at_every_peer_over_cql() {
    for profile in [Profile::Janusgraph, Profile::Titan] {
        let files = render_profile(profile);
        assert_eq!(files.len(), 1);
        assert_has_lines(
            &files[0].text,
            &[
                "storage.backend=cql",
                "storage.hostname=10.0.0.11,10.0.0.12,10.0.0.13",
                "storage.port=9042",
            ],
        );
    }
}

#[test]
fn etcd_profile_is_an_env_file_with_every_etcd_variable() {
    let files = render_profile(Profile::Etcd);
    assert_eq!(files[0].path, Path::new("/srv/troupe/etcd/etcd.env"));
    let text = &files[0].text;
    assert_sets(
        text,
        &[
            "ETCD_NAME",
            "ETCD_INITIAL_CLUSTER",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            "ETCD_LISTEN_PEER_URLS",
            "ETCD_LISTEN_CLIENT_URLS",
            "ETCD_ADVERTISE_CLIENT_URLS",
            "ETCD_INITIAL_CLUSTER_STATE",
            "ETCD_INITIAL_CLUSTER_TOKEN",
            "ETCD_DATA_DIR",
        ],
    );
    assert_has_lines(
        text,
        &[
            "ETCD_NAME=node-b",
            "ETCD_INITIAL_CLUSTER=node-a=http://10.0.0.11:2380,node-b=http://10.0.0.12:2380,node-c=http://10.0.0.13:2380",
            "ETCD_LISTEN_CLIENT_URLS=http://10.0.0.12:2379,http://127.0.0.1:2379",
            "ETCD_ADVERTISE_CLIENT_URLS=http://10.0.0.12:2379",
            "ETCD_INITIAL_CLUSTER_STATE=new",
            "ETCD_DATA_DIR=/srv/troupe/etcd/data",
        ],
    );
}

#[test]
fn zookeeper_profile_writes_zoo_cfg_and_myid() {
    let files = render_profile(Profile::Zookeeper);
    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            Path::new("/srv/troupe/zookeeper/zoo.cfg"),
            Path::new("/srv/troupe/zookeeper/data/myid")
        ]
    );
    assert_has_lines(
        &files[0].text,
        &[
            "tickTime=2000",
            "initLimit=10",
            "syncLimit=5",
            "dataDir=/srv/troupe/zookeeper/data",
            "clientPort=2181",
            "server.1=10.0.0.11:2888:3888",
            "server.2=10.0.0.12:2888:3888",
            "server.3=10.0.0.13:2888:3888",
        ],
    );
    assert_eq!(files[1].text, "2\n");
}

#[test]
fn knobs_are_overridden_for_all_nodes_and_per_node() {
    let mut w = profile_watcher(Profile::Etcd);
    w.apply(
        "profile_options",
        &json!({
            "client_port": "12379",
            "data_dir": "/data/etcd",
            "nodes": {"node-c": {"peer_port": 22380}, "node-b": {"client_port": 32379}},
        }),
    )
    .unwrap();
    w.check().unwrap();
    let text = &render_one(w).unwrap()[0].text;
    assert_has_lines(
        text,
        &[
            "ETCD_INITIAL_CLUSTER=node-a=http://10.0.0.11:2380,node-b=http://10.0.0.12:2380,node-c=http://10.0.0.13:22380",
            "ETCD_LISTEN_CLIENT_URLS=http://10.0.0.12:32379,http://127.0.0.1:32379",
            "ETCD_DATA_DIR=/data/etcd",
        ],
    );
}

/// etcd also listens on 127.0.0.1, so `etcdctl` on the node needs no --endpoints; not where the
/// node's own address is a loopback one (members sharing a host would all claim 127.0.0.1),
/// nor with `loopback_client = "no"`.
#[test]
fn etcd_serves_clients_on_loopback_unless_the_node_is_on_loopback_or_says_no() {
    let listen = |address: &str, options: Value| {
        let mut w = profile_watcher(Profile::Etcd);
        w.apply("profile_options", &options).unwrap();
        let mut peers = peer_list();
        peers.me.address = address.into();
        let files = render_all(&[w], &peers.into(), &inputs(Path::new("/var/lib/troupe"))).unwrap();
        let text = files[0].text.clone();
        text.lines()
            .find_map(|l| l.strip_prefix("ETCD_LISTEN_CLIENT_URLS="))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        listen("10.0.0.12", json!({})),
        "http://10.0.0.12:2379,http://127.0.0.1:2379"
    );
    assert_eq!(listen("127.0.0.3", json!({})), "http://127.0.0.3:2379");
    assert_eq!(
        listen("10.0.0.12", json!({"loopback_client": "no"})),
        "http://10.0.0.12:2379"
    );
}

#[test]
fn profile_files_default_to_working_dir_then_state_dir() {
    let mut w = WatcherConfig::new("etcd", "true");
    w.apply("profile", &json!("etcd")).unwrap();
    let files = render_one(w.clone()).unwrap();
    assert_eq!(files[0].path, Path::new("/var/lib/troupe/etcd/etcd.env"));
    w.apply("working_dir", &json!("/opt/etcd")).unwrap();
    let files = render_one(w).unwrap();
    assert_eq!(files[0].path, Path::new("/opt/etcd/etcd.env"));
}

#[test]
fn a_template_sees_self_peers_cluster_options_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let source = "{{ self.name }} {{ self.index }}/{{ cluster.size }} {{ cluster.name }}\n\
        {% for p in peers %}{{ p.index }}:{{ p.name }}@{{ p.address }} {{ p.endpoints.control }}\n{% endfor %}\
        {{ options.numprocesses }} {{ env.TROUPE_TEST }} {{ watcher }}\n";
    let w = template_watcher(dir.path(), "web", source, "web.conf");
    let files = render_one(w).unwrap();
    assert_eq!(
        files[0].text,
        "node-b 2/3 lab\n\
         1:node-a@10.0.0.11 tcp://10.0.0.11:5555\n\
         2:node-b@10.0.0.12 tcp://10.0.0.12:5555\n\
         3:node-c@10.0.0.13 tcp://10.0.0.13:5555\n\
         1 from-env web\n"
    );
}

#[test]
fn a_syntax_error_names_the_template_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let w = template_watcher(
        dir.path(),
        "web",
        "a\nb\n{% for p in peers %}\n{{ p.name }\n",
        "x",
    );
    let e = render_one(w).unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.template.ends_with("web.j2"), "{e}");
    assert!(e.cause.contains("syntax error"), "{e}");
    assert!(e.to_string().contains(", line 4: "), "{e}");
}

#[test]
fn an_undefined_variable_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let w = template_watcher(
        dir.path(),
        "web",
        "ok\n{{ self.name }}\n{{ self.port }}\n",
        "x",
    );
    let e = render_one(w).unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.cause.contains("undefined"), "{e}");
    let w = template_watcher(dir.path(), "web", "{{ nope }}\n", "x");
    assert!(render_one(w).unwrap_err().cause.contains("undefined"));
}

#[test]
fn a_missing_source_is_an_error_naming_it() {
    let mut w = WatcherConfig::new("web", "true");
    w.apply(
        "template",
        &json!([{"source": "/nonexistent/web.j2", "dest": "/tmp/x"}]),
    )
    .unwrap();
    let e = render_one(w).unwrap_err();
    assert_eq!(e.template, "/nonexistent/web.j2");
    assert!(e.cause.contains("cannot read source"), "{e}");
}

#[test]
fn a_relative_source_is_read_from_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.j2"), "{{ self.index }}\n").unwrap();
    let mut w = WatcherConfig::new("web", "true");
    w.apply("template", &json!({"source": "web.j2", "dest": "web.conf"}))
        .unwrap();
    let mut inputs = inputs(dir.path());
    inputs.config_dir = Some(dir.path().to_path_buf());
    let files = render_all(&[w], &peer_list().into(), &inputs).unwrap();
    assert_eq!(files[0].text, "2\n");
    assert_eq!(files[0].path, dir.path().join("web/web.conf"));
}

#[test]
fn one_failing_template_of_any_watcher_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = template_watcher(dir.path(), "a-good", "{{ self.name }}\n", "good.conf");
    let bad = template_watcher(dir.path(), "b-bad", "{{ missing }}\n", "bad.conf");
    let result = render_all(&[good, bad], &peer_list().into(), &inputs(dir.path()))
        .and_then(|files| write_all(&files, dir.path()));
    let e = result.unwrap_err();
    assert_eq!(e.watcher, "b-bad");
    assert!(!dir.path().join("good.conf").exists());
    assert!(!dir.path().join("bad.conf").exists());
}

#[test]
fn an_unwritable_dest_fails_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let good = template_watcher(dir.path(), "a-good", "good\n", "new-dir/sub/good.conf");
    // The parent of this dest is a regular file: no one, not even root, can write there.
    let bad = template_watcher(dir.path(), "b-bad", "bad\n", "a-file/bad.conf");
    let files = render_all(&[good, bad], &peer_list().into(), &inputs(dir.path())).unwrap();
    let e = write_all(&files, dir.path()).unwrap_err();
    assert_eq!(e.watcher, "b-bad");
    assert!(e.template.ends_with("b-bad.j2"), "{e}");
    assert!(e.cause.contains("a-file/bad.conf"), "{e}");
    assert!(
        !dir.path().join("new-dir").exists(),
        "the staged file and the dirs made for it are rolled back"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[test]
fn two_templates_writing_one_dest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = template_watcher(dir.path(), "a", "a\n", "same.conf");
    let b = template_watcher(dir.path(), "b", "b\n", "same.conf");
    let e = render_all(&[a, b], &peer_list().into(), &inputs(dir.path())).unwrap_err();
    assert!(e.cause.contains("also written by"), "{e}");
}

fn file(path: &Path, text: &str, mode: Option<u32>) -> RenderedFile {
    RenderedFile {
        watcher: "w".into(),
        template: "t.j2".into(),
        path: path.to_path_buf(),
        text: text.into(),
        mode,
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn writes_are_atomic_keep_a_bak_and_report_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conf/app.conf");
    let bak = dir.path().join("conf/app.conf.bak");

    let first = write_all(&[file(&path, "one\n", None)], dir.path()).unwrap();
    assert!(first[0].changed);
    assert_eq!(first[0].sha256, write::sha256_hex(b"one\n"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
    assert_eq!(mode_of(&path), write::DEFAULT_MODE);
    assert!(!bak.exists(), "a new file has no previous version");

    let same = write_all(&[file(&path, "one\n", None)], dir.path()).unwrap();
    assert!(!same[0].changed);
    assert!(!bak.exists(), "an unchanged file is not rewritten");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let second = write_all(&[file(&path, "two\n", None)], dir.path()).unwrap();
    assert!(second[0].changed);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), "one\n");
    assert_eq!(mode_of(&path), 0o600, "the existing mode is preserved");

    let third = write_all(&[file(&path, "two\n", Some(0o640))], dir.path()).unwrap();
    assert!(third[0].changed, "a mode change is a change");
    assert_eq!(mode_of(&path), 0o640);
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), "two\n");
    let left = std::fs::read_dir(dir.path().join("conf")).unwrap().count();
    assert_eq!(left, 2, "only the file and its .bak remain");
}

#[test]
fn sha256_is_the_hex_digest() {
    assert_eq!(
        write::sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn a_dry_run_reports_changes_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.conf");
    let outcomes = preview(&[file(&path, "x\n", None)]).unwrap();
    assert!(outcomes[0].changed);
    assert!(!path.exists());
    std::fs::write(&path, "x\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let outcomes = preview(&[file(&path, "x\n", None)]).unwrap();
    assert!(!outcomes[0].changed);
}

#[test]
fn a_template_includes_files_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("parts")).unwrap();
    std::fs::write(
        dir.path().join("parts/peers.j2"),
        "{% for p in peers %}{{ p.name }} {% endfor %}\n{% include \"me.j2\" %}",
    )
    .unwrap();
    std::fs::write(dir.path().join("parts/me.j2"), "me={{ self.name }}\n").unwrap();
    let w = template_watcher(
        dir.path(),
        "web",
        "# generated\n{% include \"parts/peers.j2\" %}",
        "web.conf",
    );
    let files = render_one(w).unwrap();
    // trim_blocks: the newline after `{% endfor %}` goes, as everywhere.
    assert_eq!(
        files[0].text,
        "# generated\nnode-a node-b node-c me=node-b\n"
    );

    let w = template_watcher(dir.path(), "web", "{% include \"nope.j2\" %}\n", "x");
    let e = render_one(w).unwrap_err();
    assert!(e.cause.contains("non-existing template \"nope.j2\""), "{e}");
    assert_eq!(e.line, Some(1), "{e}");
}

#[test]
fn data_dir_knobs_default_to_the_watchers_first_data_dir() {
    for (profile, key) in [
        (Profile::Etcd, "ETCD_DATA_DIR"),
        (Profile::Zookeeper, "dataDir"),
        (Profile::Neo4j, "server.directories.data"),
    ] {
        let mut w = profile_watcher(profile);
        w.apply("data_dir", &json!(["/data/one", "/data/two"]))
            .unwrap();
        let files = render_one(w).unwrap();
        let read = hostile::keys_read(profile, &files[0].text);
        let value = read.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(value, Some("/data/one"), "{profile:?}:\n{}", files[0].text);
        if profile == Profile::Zookeeper {
            assert_eq!(files[1].path, Path::new("/data/one/myid"));
        }
    }
}

#[test]
fn the_etcd_profile_gives_its_watcher_the_env_file() {
    let state = Path::new("/var/lib/troupe");
    let mut w = profile_watcher(Profile::Etcd);
    assert_eq!(
        profile_env_file(&w, state),
        Some(PathBuf::from("/srv/troupe/etcd/etcd.env"))
    );
    w.apply("profile", &json!("zookeeper")).unwrap();
    assert_eq!(profile_env_file(&w, state), None);
}

#[path = "hostile_tests.rs"]
mod hostile;

/// The state an agent SIGKILLed among its renames leaves: every file staged, the journal
/// written, the first `renamed` files renamed into place.
fn crash_among_renames(dir: &Path, paths: &[PathBuf], renamed: usize) {
    let renames: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let name = path.file_name().unwrap().to_string_lossy();
            let temp = path.with_file_name(format!(".{name}.troupe-1-{i}.tmp"));
            std::fs::write(&temp, "new\n").unwrap();
            json!({"temp": temp, "dest": path})
        })
        .collect();
    std::fs::write(
        dir.join(write::JOURNAL),
        serde_json::to_vec(&renames).unwrap(),
    )
    .unwrap();
    for rename in &renames[..renamed] {
        let temp = rename["temp"].as_str().unwrap();
        std::fs::rename(temp, rename["dest"].as_str().unwrap()).unwrap();
    }
}

#[test]
fn a_configure_killed_among_its_renames_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..5)
        .map(|i| dir.path().join(format!("conf/{i}.conf")))
        .collect();
    let old: Vec<RenderedFile> = paths.iter().map(|p| file(p, "old\n", None)).collect();
    write_all(&old, dir.path()).unwrap();
    assert!(
        !dir.path().join(write::JOURNAL).exists(),
        "a finished configure leaves no journal"
    );
    crash_among_renames(dir.path(), &paths, 2);

    let done = write::recover(dir.path()).unwrap();
    assert_eq!(done, paths[2..]);
    for path in &paths {
        assert_eq!(std::fs::read_to_string(path).unwrap(), "new\n", "{path:?}");
    }
    assert!(!dir.path().join(write::JOURNAL).exists());
    let left = std::fs::read_dir(dir.path().join("conf")).unwrap().count();
    assert_eq!(
        left,
        5 + 3,
        "the files, and a .bak of each one recovery renamed"
    );
    assert!(
        write::recover(dir.path()).unwrap().is_empty(),
        "nothing twice"
    );
}

#[test]
fn a_journal_entry_that_is_not_a_staged_file_beside_its_dest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    let entry = json!([{"temp": victim, "dest": dir.path().join("conf/x.conf")}]);
    std::fs::write(dir.path().join(write::JOURNAL), entry.to_string()).unwrap();
    let e = write::recover(dir.path()).unwrap_err();
    assert!(e.contains("not a staged configure file"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    std::fs::write(dir.path().join(write::JOURNAL), "{not json").unwrap();
    let e = write::recover(dir.path()).unwrap_err();
    assert!(e.contains("run `troupe configure` again"), "{e}");
}
