//! Config parsing and validation: defaults, every option, and all problems reported at once.

use super::*;
use serde_json::json;

#[test]
fn an_empty_file_gives_defaults() {
    let config = AgentConfig::parse("", "t.toml").unwrap();
    assert_eq!(config.agent.cluster, "default");
    assert_eq!(config.agent.bind, "0.0.0.0");
    assert_eq!(
        (
            config.agent.control_port,
            config.agent.pubsub_port,
            config.agent.stats_port
        ),
        (5555, 5556, 5557)
    );
    assert!(config.agent.mdns);
    assert!(!config.agent.allow_remote_exec);
    assert_eq!(config.agent.max_message_size, 1 << 20);
    assert!(config.watchers.is_empty());
}

#[test]
fn a_full_watcher_parses_with_circus_names() {
    let text = r#"
[agent]
name = "node-a"
cluster = "lab"
bind = "127.0.0.2"
control_port = 6555
stats_interval = "2s"
state_dir = "/tmp/troupe-state"
allow_remote_exec = true
max_message_size = "2MiB"

[watcher.web]
cmd = "python3 -m http.server"
args = "--bind 127.0.0.1 8000"
numprocesses = 3
working_dir = "/srv"
copy_env = true
autostart = false
respawn = true
max_retry = -1
warmup_delay = 0.5
graceful_timeout = "5s"
stop_signal = "INT"
stop_children = true
priority = 10
max_age = 3600
max_age_variance = 60
min_uptime = "2s"
backoff_max = "30s"
stdout = { file = "/var/log/web.out", max_bytes = "50MB", backup_count = 3 }
stderr = "/var/log/web.err"

[watcher.web.env]
PORT = "8000"
DEBUG = 1

[watcher.web.hooks]
before_start = "test -d /srv"
after_reap = { cmd = "logger reaped", ignore_errors = true, timeout = "5s" }
"#;
    let config = AgentConfig::parse(text, "t.toml").unwrap();
    assert_eq!(config.agent.name, "node-a");
    assert_eq!(config.agent.control_port, 6555);
    assert_eq!(config.agent.stats_interval, Duration::from_secs(2));
    assert_eq!(config.agent.max_message_size, 2 << 20);
    let web = &config.watchers[0];
    assert_eq!(web.name, "web");
    assert_eq!(
        web.argv(),
        [
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "8000"
        ]
    );
    assert_eq!(web.numprocesses, 3);
    assert!(!web.autostart && web.copy_env && web.stop_children);
    assert_eq!(web.max_retry, -1);
    assert_eq!(web.warmup_delay, Duration::from_millis(500));
    assert_eq!(web.graceful_timeout, Duration::from_secs(5));
    assert_eq!(web.stop_signal, 2);
    assert_eq!(web.priority, 10);
    assert_eq!(web.max_age, Duration::from_secs(3600));
    assert_eq!(web.env["PORT"], "8000");
    assert_eq!(web.env["DEBUG"], "1");
    let stdout = web.stdout.as_ref().unwrap();
    assert_eq!((stdout.max_bytes, stdout.backup_count), (50_000_000, 3));
    assert_eq!(
        web.stderr.as_ref().unwrap().file,
        PathBuf::from("/var/log/web.err")
    );
    assert_eq!(web.hooks["before_start"].cmd, "test -d /srv");
    assert!(web.hooks["after_reap"].ignore_errors);
    assert_eq!(web.hooks["after_reap"].timeout, Duration::from_secs(5));
}

#[test]
fn every_problem_is_reported_at_once_with_file_key_expected_and_got() {
    let text = r#"
[agent]
control_port = 70000
colour = "blue"

[watcher.web]
cmd = "sleep 1"
numprocesses = "two"
stop_signal = "NOPE"

[watcher.db]
numprocesses = 1

[watcher.sing]
cmd = "x"
singleton = true
numprocesses = 2

[extra]
"#;
    let err = AgentConfig::parse(text, "troupe-agent.toml").unwrap_err();
    let shown = err.to_string();
    let expected = [
        "troupe-agent.toml: agent.control_port: expected an integer from 0 to 65535, got 70000",
        "troupe-agent.toml: agent.colour: unknown key",
        "troupe-agent.toml: watcher.web.numprocesses: expected an integer from 0 to 100000, got \"two\"",
        "troupe-agent.toml: watcher.web.stop_signal: expected a signal name or number, got \"NOPE\"",
        "troupe-agent.toml: watcher.db.cmd: missing: every watcher needs a cmd",
        "troupe-agent.toml: watcher.sing: singleton watcher 'sing' cannot have numprocesses = 2",
        "troupe-agent.toml: extra: unknown section",
    ];
    for line in expected {
        assert!(shown.contains(line), "missing {line:?} in:\n{shown}");
    }
    assert_eq!(err.problems.len(), expected.len(), "{shown}");
}

#[test]
fn a_mistyped_key_is_told_the_nearest_known_one() {
    let text =
        "[agent]\nclustr = \"lab\"\n[watcher.web]\ncmd = \"x\"\nnumproceses = 2\nbogus = 1\n";
    let shown = AgentConfig::parse(text, "troupe-agent.toml")
        .unwrap_err()
        .to_string();
    for line in [
        "troupe-agent.toml: agent.clustr: unknown key `clustr`; did you mean `cluster`?",
        "troupe-agent.toml: watcher.web.numproceses: unknown key `numproceses`; did you mean `numprocesses`?",
        "troupe-agent.toml: watcher.web.bogus: unknown key `bogus`\n",
    ] {
        assert!(format!("{shown}\n").contains(line), "missing {line:?} in:\n{shown}");
    }
}

/// The "did you mean" lists are written beside the readers: each of their keys must be one the
/// reader takes, or a typo would be pointed at a key that is refused in turn.
#[test]
fn every_key_offered_as_a_suggestion_is_accepted() {
    for key in AGENT_KEYS {
        let text = format!("[agent]\n{key} = {{}}\n");
        let shown = AgentConfig::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(!shown.contains("unknown key"), "{key}: {shown}");
    }
    for key in WatcherConfig::KEYS {
        let error = WatcherConfig::new("w", "x").apply(key, &json!([[]]));
        assert!(
            !matches!(error, Err(OptionError::UnknownKey { .. })),
            "{key}: {error:?}"
        );
    }
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let err = AgentConfig::parse("[agent]\nname = \"a\"\nbind = \n", "x.toml").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    let shown = err.to_string();
    assert!(shown.starts_with("x.toml: line 3: invalid TOML"), "{shown}");
}

#[test]
fn duplicate_ports_and_names_are_refused() {
    let text = "[agent]\npubsub_port = 5555\n[watcher.A]\ncmd = \"x\"\n[watcher.a]\ncmd = \"y\"\n";
    let shown = AgentConfig::parse(text, "t").unwrap_err().to_string();
    assert!(
        shown.contains("agent.pubsub_port: port 5555 is already used by agent.control_port"),
        "{shown}"
    );
    assert!(shown.contains("unique ignoring case"), "{shown}");
}

#[test]
fn circus_bind_is_off_by_default_true_means_loopback_and_its_ports_are_checked() {
    let parse = |agent: &str| AgentConfig::parse(&format!("[agent]\n{agent}\n"), "t");
    let default = parse("").unwrap().agent;
    assert_eq!(default.circus_bind, None);
    assert_eq!(default.circus_endpoint(default.circus_control_port), None);
    let on = parse("circus_bind = true").unwrap().agent;
    assert_eq!(
        on.circus_endpoint(on.circus_stats_port).as_deref(),
        Some("tcp://127.0.0.1:5567")
    );
    let custom = parse("circus_bind = \"127.0.0.5\"\ncircus_control_port = 6565").unwrap();
    assert_eq!(
        custom
            .agent
            .circus_endpoint(custom.agent.circus_control_port)
            .as_deref(),
        Some("tcp://127.0.0.5:6565")
    );
    let shown = parse("circus_bind = 1").unwrap_err().to_string();
    assert!(
        shown.contains("agent.circus_bind: expected true (127.0.0.1), false or an address"),
        "{shown}"
    );
    let shown = parse("circus_bind = true\ncircus_stats_port = 5555")
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("agent.circus_stats_port: port 5555 is already used by agent.control_port"),
        "{shown}"
    );
    // Unused ports clash with nothing while circus_bind is off.
    assert!(parse("circus_stats_port = 5555").is_ok());
}

#[test]
fn watcher_names_that_break_topics_are_refused() {
    for name in ["a.b", "a:b", ""] {
        assert!(check_watcher_name(name).is_err(), "{name:?}");
    }
    assert!(check_watcher_name("echo web").is_ok());
}

#[test]
fn set_options_report_their_effect_and_refuse_unknown_keys() {
    let mut w = WatcherConfig::new("w", "sleep 1");
    assert_eq!(w.apply("numprocesses", &json!(3)), Ok(OptionEffect::Resize));
    assert_eq!(w.apply("cmd", &json!("sleep 2")), Ok(OptionEffect::Reload));
    assert_eq!(
        w.apply("graceful_timeout", &json!("2")),
        Ok(OptionEffect::None)
    );
    assert_eq!(w.graceful_timeout, Duration::from_secs(2));
    assert_eq!(
        w.apply("hooks.after_stop", &json!("true")),
        Ok(OptionEffect::None)
    );
    assert_eq!(w.hooks["after_stop"].cmd, "true");
    assert_eq!(
        w.apply("bogus", &json!(1)),
        Err(OptionError::UnknownKey {
            key: "bogus".into(),
            known: &WatcherConfig::KEYS
        })
    );
    assert!(matches!(
        w.apply("hooks.nope", &json!("x")),
        Err(OptionError::UnknownHook(_))
    ));
    assert!(w.apply("cmd", &json!("")).is_err());
    assert!(w.apply("cmd", &json!("'open")).is_err());
}

#[test]
fn options_json_uses_circus_names_and_units() {
    let w = WatcherConfig::new("w", "sleep 1");
    let options = w.options_json();
    assert_eq!(options["numprocesses"], json!(1));
    assert_eq!(options["stop_signal"], json!(15));
    assert_eq!(options["graceful_timeout"], json!(30.0));
    assert_eq!(options["max_retry"], json!(5));
    assert_eq!(options["env"], json!({}));
    assert!(options.contains_key("stdout_stream_conf"));
}

#[test]
fn shell_mode_runs_through_sh() {
    let mut w = WatcherConfig::new("w", "echo $HOME | tr a-z A-Z");
    w.shell = true;
    assert_eq!(w.argv(), ["/bin/sh", "-c", "echo $HOME | tr a-z A-Z"]);
    w.args = vec!["it's".into()];
    assert_eq!(
        w.argv(),
        ["/bin/sh", "-c", "echo $HOME | tr a-z A-Z 'it'\\''s'"]
    );
}

#[test]
fn changes_in_place_are_those_that_need_no_new_processes() {
    let live = WatcherConfig::new("w", "sleep 1");
    assert_eq!(live.changes_in_place(&live.clone()), Some(Vec::new()));

    let mut tuned = live.clone();
    tuned.numprocesses = 3;
    tuned.graceful_timeout = std::time::Duration::from_secs(2);
    tuned.apply("profile", &json!("etcd")).unwrap();
    tuned.apply("data_dir", &json!(["/srv/etcd"])).unwrap();
    let options = live.changes_in_place(&tuned).expect("all in place");
    let keys: Vec<&str> = options.iter().map(|(k, _)| k.as_str()).collect();
    for key in ["numprocesses", "graceful_timeout", "profile", "data_dir"] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    let mut applied = live.clone();
    for (key, value) in &options {
        applied.apply(key, value).unwrap();
    }
    assert_eq!(applied, tuned);

    for new_processes in [
        WatcherConfig::new("w", "sleep 2"),
        WatcherConfig {
            env: [("A".to_string(), "1".to_string())].into(),
            ..tuned.clone()
        },
    ] {
        assert_eq!(live.changes_in_place(&new_processes), None);
    }
}

#[test]
fn env_file_takes_a_path_or_a_list_and_needs_a_working_dir_when_relative() {
    let text = "[watcher.etcd]\ncmd = \"etcd\"\nprofile = \"etcd\"\nworking_dir = \"/srv/etcd\"\n\
                env_file = [\"etcd.env\", \"-/etc/default/etcd\"]\n";
    let config = AgentConfig::parse(text, "t.toml").unwrap();
    let etcd = &config.watchers[0];
    assert_eq!(
        etcd.env_files,
        Some(vec![
            "etcd.env".to_string(),
            "-/etc/default/etcd".to_string()
        ])
    );
    assert_eq!(
        etcd.options_json()["env_file"],
        json!(["etcd.env", "-/etc/default/etcd"])
    );

    let mut w = WatcherConfig::new("w", "x");
    assert_eq!(
        w.options_json()["env_file"],
        json!(null),
        "unset by default"
    );
    assert_eq!(
        w.apply("env_file", &json!("/a.env")),
        Ok(OptionEffect::Reload)
    );
    assert_eq!(w.env_files, Some(vec!["/a.env".to_string()]));
    w.apply("env_file", &json!([])).unwrap();
    assert_eq!(
        w.env_files,
        Some(Vec::new()),
        "[]: none, not even the profile's"
    );
    w.apply("env_file", &json!(null)).unwrap();
    assert_eq!(w.env_files, None);
    for bad in [
        json!(1),
        json!([""]),
        json!(["-"]),
        json!({"a": "b"}),
        json!([1]),
    ] {
        assert!(w.apply("env_file", &bad).is_err(), "{bad}");
    }

    let relative = "[watcher.w]\ncmd = \"x\"\nenv_file = \"w.env\"\n";
    let shown = AgentConfig::parse(relative, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("env_file \"w.env\" is relative: it needs a working_dir"),
        "{shown}"
    );
}

#[test]
fn node_and_cluster_names_follow_the_peer_name_rule() {
    for (key, bad) in [
        ("name", "a;b"),
        ("cluster", "$(id)"),
        ("name", "a.b"),
        ("cluster", ""),
    ] {
        let text = format!("[agent]\n{key} = {bad:?}\n");
        let shown = AgentConfig::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(shown.contains(&format!("agent.{key}: ")), "{shown}");
        assert!(shown.contains("is not a valid name"), "{shown}");
    }
    let ok = AgentConfig::parse("[agent]\nname = \"node_A-1\"\ncluster = \"lab-2\"\n", "t");
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn circus_wid_is_filled_in_per_process() {
    let mut w = WatcherConfig::new("w", "server --id $(circus.wid) --x ((CIRCUS.WID))");
    w.args = vec!["$(circus.wid)".into(), "$(circus.other)".into()];
    assert_eq!(
        w.argv_for(7),
        ["server", "--id", "7", "--x", "7", "7", "$(circus.other)"]
    );
    w.shell = true;
    assert_eq!(
        w.argv_for(2)[2],
        "server --id 2 --x 2 '2' '$(circus.other)'"
    );
}
