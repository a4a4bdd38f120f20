//! The configure/reset keys, through the config file and through `set`.

use super::*;
use crate::config::{AgentConfig, WatcherConfig};
use serde_json::json;
use std::path::Path;

fn problems(text: &str) -> String {
    AgentConfig::parse(text, "t.toml").unwrap_err().to_string()
}

#[test]
fn a_config_file_declares_profile_templates_data_dirs_and_hook() {
    let text = r#"
[watcher.zk]
cmd = "java"
profile = "zookeeper"
profile_dir = "/srv/zk"
data_dir = ["/srv/zk/data", "/srv/zk/log/"]
reset_hook = { cmd = "echo reset", timeout = "5s" }

[watcher.zk.profile_options]
client_port = 12181
nodes = { node-b = { client_port = "22181" } }

[[watcher.zk.template]]
source = "extra.j2"
dest = "/srv/zk/extra.conf"
mode = "0640"

[[watcher.zk.template]]
source = "/etc/troupe/log4j.j2"
dest = "log4j.properties"
mode = 0o600
"#;
    let config = AgentConfig::parse(text, "t.toml").unwrap();
    let s = &config.watchers[0].service;
    assert_eq!(s.profile, Some(Profile::Zookeeper));
    assert_eq!(s.profile_dir.as_deref(), Some(Path::new("/srv/zk")));
    assert_eq!(s.profile_options["client_port"], json!(12181));
    assert_eq!(
        s.data_dirs,
        [PathBuf::from("/srv/zk/data"), PathBuf::from("/srv/zk/log")]
    );
    assert_eq!(s.reset_hook.as_ref().unwrap().cmd, "echo reset");
    assert_eq!(
        s.templates,
        [
            TemplateConfig {
                source: "extra.j2".into(),
                dest: "/srv/zk/extra.conf".into(),
                mode: Some(0o640),
            },
            TemplateConfig {
                source: "/etc/troupe/log4j.j2".into(),
                dest: "log4j.properties".into(),
                mode: Some(0o600),
            },
        ]
    );
}

#[test]
fn unsafe_data_dirs_are_config_errors_naming_the_rule() {
    let out = problems("[watcher.w]\ncmd = \"x\"\ndata_dir = [\"/etc\"]\n");
    assert!(out.contains("watcher.w.data_dir"), "{out}");
    assert!(out.contains("top-level system directory"), "{out}");
    let out = problems("[watcher.w]\ncmd = \"x\"\ndata_dir = \"relative/dir\"\n");
    assert!(out.contains("must be absolute"), "{out}");
    let out = problems("[watcher.w]\ncmd = \"x\"\ndata_dir = [\"/\"]\n");
    assert!(out.contains("must not be /"), "{out}");
    let out = problems("[watcher.w]\ncmd = \"x\"\ndata_dir = [\"/srv/../etc\"]\n");
    assert!(out.contains("'..'"), "{out}");
}

#[test]
fn profiles_and_knobs_are_checked() {
    let out = problems("[watcher.w]\ncmd = \"x\"\nprofile = \"mysql\"\n");
    assert!(
        out.contains("one of neo4j, janusgraph, titan, etcd, zookeeper"),
        "{out}"
    );
    let out = problems(
        "[watcher.w]\ncmd = \"x\"\nprofile = \"etcd\"\nprofile_options = { clientport = 1 }\n",
    );
    assert!(
        out.contains("profile_options.clientport: unknown knob"),
        "{out}"
    );
    let out = problems(
        "[watcher.w]\ncmd = \"x\"\nprofile = \"etcd\"\n[watcher.w.profile_options.nodes.b]\npeer_port = 70000\n",
    );
    assert!(out.contains("profile_options.nodes.b.peer_port"), "{out}");
    let out = problems(
        "[watcher.w]\ncmd = \"x\"\nprofile = \"etcd\"\nprofile_options = { cluster_state = \"old\" }\n",
    );
    assert!(out.contains("one of new, existing"), "{out}");
    let out = problems("[watcher.w]\ncmd = \"x\"\nprofile_dir = \"rel\"\n");
    assert!(out.contains("an absolute path"), "{out}");
}

#[test]
fn templates_need_source_and_dest_and_a_valid_mode() {
    let mut w = WatcherConfig::new("w", "x");
    assert!(w.apply("template", &json!([{"source": "a.j2"}])).is_err());
    assert!(w
        .apply(
            "template",
            &json!([{"source": "a", "dest": "b", "mode": "0999"}])
        )
        .is_err());
    assert!(w
        .apply(
            "template",
            &json!([{"source": "a", "dest": "b", "owner": "x"}])
        )
        .is_err());
    assert!(w
        .apply(
            "template",
            &json!({"source": "a", "dest": "b", "mode": 420})
        )
        .is_ok());
    assert_eq!(w.service.templates[0].mode, Some(0o644));
}

#[test]
fn options_json_round_trips_through_set() {
    let mut w = WatcherConfig::new("w", "x");
    for (key, value) in [
        ("profile", json!("etcd")),
        ("profile_dir", json!("/srv/etcd")),
        (
            "profile_options",
            json!({"client_port": 1, "nodes": {"a": {"peer_port": 2}}}),
        ),
        (
            "template",
            json!([{"source": "a.j2", "dest": "/x/a", "mode": "0640"}]),
        ),
        ("data_dir", json!(["/srv/etcd/data"])),
        ("reset_hook", json!("true")),
    ] {
        w.apply(key, &value).unwrap();
    }
    let options = w.options_json();
    let mut copy = WatcherConfig::new("w", "x");
    for key in ServiceOptions::KEYS {
        copy.apply(key, &options[key]).unwrap();
    }
    assert_eq!(copy.service, w.service);
    assert_eq!(options["template"][0]["mode"], json!("0640"));
    for key in ServiceOptions::KEYS {
        copy.apply(key, &Value::Null).unwrap();
    }
    assert_eq!(
        copy.service,
        ServiceOptions::default(),
        "null clears every key"
    );
}

#[test]
fn a_data_dir_knob_outside_every_data_dir_is_reported_per_node() {
    let mut w = WatcherConfig::new("etcd", "etcd");
    w.apply("profile", &json!("etcd")).unwrap();
    w.apply(
        "profile_options",
        &json!({"data_dir": "/elsewhere", "nodes": {"a": {"data_dir": "/data/etcd/a"},
                                                    "b": {"data_dir": "/data/etcdx"}}}),
    )
    .unwrap();
    assert_eq!(
        w.service.data_dir_disagreements(),
        Vec::<String>::new(),
        "no data_dir: nothing to disagree with"
    );
    w.apply("data_dir", &json!(["/data/etcd", "/data/wal"]))
        .unwrap();
    let found = w.service.data_dir_disagreements();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("profile_options.data_dir \"/elsewhere\" is outside every data_dir (\"/data/etcd\", \"/data/wal\")"), "{found:?}");
    assert!(
        found[1].starts_with("profile_options.nodes.b.data_dir \"/data/etcdx\""),
        "{found:?}"
    );

    w.apply("profile", &json!("janusgraph")).unwrap();
    w.apply("profile_options", &json!({})).unwrap();
    assert!(
        w.service.data_dir_disagreements().is_empty(),
        "no data-dir knob"
    );
}
