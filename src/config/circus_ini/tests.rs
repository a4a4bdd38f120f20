use super::parse::Ini;
use super::substitute::Environ;
use super::*;
use std::path::Path;

fn sections(text: &str) -> Vec<Section> {
    let mut ini = Ini::default();
    ini.read(text, "c.ini").unwrap();
    ini.with_defaults()
}

fn value<'a>(sections: &'a [Section], section: &str, key: &str) -> Option<&'a str> {
    sections
        .iter()
        .find(|s| s.name == section)?
        .get(key)
        .map(|e| e.value.as_str())
}

#[test]
fn the_dialect_is_circusds() {
    let text = "# comment\n; comment\nrem a comment\n[watcher:a]\ncmd: sleep 1 ; comment\n\
                args = x;y\nempty = \"\"\ncmd = second is ignored\n  continued\n\n  and more\n\
                Key = case kept\n[DEFAULT]\nshared = 1\n[watcher:a]\nlate = extends\n\
                numprocesses = 2 #not a comment\r\n[x] ; comment\n";
    let s = sections(text);
    assert_eq!(
        value(&s, "watcher:a", "cmd"),
        Some("sleep 1\ncontinued\nand more")
    );
    assert_eq!(value(&s, "watcher:a", "args"), Some("x;y"));
    assert_eq!(value(&s, "watcher:a", "empty"), Some(""));
    assert_eq!(value(&s, "watcher:a", "Key"), Some("case kept"));
    assert_eq!(value(&s, "watcher:a", "key"), None);
    assert_eq!(value(&s, "watcher:a", "late"), Some("extends"));
    assert_eq!(
        value(&s, "watcher:a", "numprocesses"),
        Some("2 #not a comment")
    );
    assert_eq!(value(&s, "watcher:a", "shared"), Some("1"));
    assert_eq!(value(&s, "x", "shared"), Some("1"));
    let cmd = s[0].get("cmd").unwrap();
    assert_eq!(cmd.origin.line, 5);
}

#[test]
fn bad_lines_are_all_reported_with_their_line() {
    let mut ini = Ini::default();
    let errors = ini
        .read("[circus]\nno delimiter\nok = 1\nalso bad\n", "c.ini")
        .unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.origin.line).collect();
    assert_eq!(lines, [2, 4]);
    let errors = Ini::default().read("key = 1\n", "c.ini").unwrap_err();
    assert!(
        errors[0].message.contains("before any [section]"),
        "{errors:?}"
    );
}

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
    let environ = Environ::new(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    load(Path::new("circus.ini"), text, environ)
}

#[test]
fn endpoints_become_the_agents_address_and_ports() {
    let config = load_text(
        "[circus]\nendpoint = tcp://10.0.0.1:6000\npubsub_endpoint = tcp://10.0.0.1:6001\n\
         stats_endpoint = tcp://10.0.0.1:6002\n",
        &[],
    )
    .unwrap();
    let a = &config.agent;
    assert_eq!(
        (a.bind.as_str(), a.control_port, a.pubsub_port, a.stats_port),
        ("10.0.0.1", 6000, 6001, 6002)
    );
    // Without [circus], circusd's defaults: loopback.
    let config = load_text("[watcher:w]\ncmd = sleep 1\n", &[]).unwrap();
    assert_eq!(
        (config.agent.bind.as_str(), config.agent.control_port),
        ("127.0.0.1", 5555)
    );
    let err = load_text(
        "[circus]\nendpoint = tcp://10.0.0.1:6000\npubsub_endpoint = tcp://10.0.0.2:6001\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("circus.ini: line 3: [circus] pubsub_endpoint: troupe binds its three sockets on one address"), "{err}");
    let err = load_text("[circus]\nendpoint = ipc:///tmp/c.sock\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2: [circus] endpoint: expected tcp://HOST:PORT"),
        "{err}"
    );
}

#[test]
fn circusd_only_options_are_ignored_once_by_name_and_typos_are_errors() {
    let config = load_text(
        "[circus]\ncheck_delay = 5\npidfile = /run/c.pid\nhttpd = 1\n",
        &[],
    )
    .unwrap();
    let ignored: Vec<String> = config
        .ignored
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect();
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(
        ignored[0].starts_with(
            "line 1: [circus]: ignored, as troupe has no use for them: check_delay, pidfile, httpd"
        ),
        "{ignored:?}"
    );
    let err = load_text("[circus]\nendpont = tcp://127.0.0.1:1\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2: [circus] endpont: unknown key `endpont`; did you mean `endpoint`?"),
        "{err}"
    );
}

#[test]
fn sockets_plugins_and_unknown_sections_are_refused_by_name() {
    let err = load_text(
        "[socket:web]\nhost = 127.0.0.1\n[plugin:statsd]\nuse = circus.plugins.statsd.StatsdEmitter\n[wacher:x]\ncmd = a\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 1: [socket:web]: troupe does not open sockets"),
        "{err}"
    );
    assert!(
        err.contains("line 3: [plugin:statsd]: troupe runs no Circus plugins"),
        "{err}"
    );
    assert!(err.contains("line 5: [wacher:x]: unknown section"), "{err}");
}

#[test]
fn env_sections_and_substitutions_are_circusds() {
    let text =
        "[env]\nBASE = $(circus.env.HOME)/app\n[env:web*, api]\nPORT = 80\nHOMEDIR = $HOME\n\
                [watcher:web1]\ncmd = run --port $(CIRCUS.ENV.port) --base ((circus.env.base))\n\
                [watcher:other]\ncmd = run\nworking_dir = $(circus.env.HOME)\n";
    let config = load_text(text, &[("HOME", "/home/u")]).unwrap();
    let web = config.watchers.iter().find(|w| w.name == "web1").unwrap();
    assert_eq!(web.cmd, "run --port 80 --base /home/u/app");
    assert_eq!(web.env.get("HOMEDIR").map(String::as_str), Some("/home/u"));
    assert_eq!(web.env.get("BASE").map(String::as_str), Some("/home/u/app"));
    let other = config.watchers.iter().find(|w| w.name == "other").unwrap();
    assert_eq!(other.env.get("PORT"), None);
    assert_eq!(other.working_dir.as_deref(), Some(Path::new("/home/u")));
    // Circus sorts watchers by name.
    let names: Vec<&str> = config.watchers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["other", "web1"]);
    // $(circus.wid) is the agent's to fill in at each spawn; a socket it cannot.
    let config = load_text("[watcher:w]\ncmd = run --id $(circus.wid)\n", &[]).unwrap();
    assert_eq!(config.watchers[0].argv_for(3), ["run", "--id", "3"]);
    let err = load_text("[watcher:w]\ncmd = run --fd $(circus.sockets.web)\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2: [watcher:w] cmd: $(circus.sockets.web) is filled in by circusd at each spawn, not by troupe"), "{err}");
}

#[test]
fn watcher_options_are_read_by_the_one_option_reader() {
    let err = load_text(
        "[watcher:w]\ncmd = a\nnumprocesses = two\nNumProcesses = 2\nuid = www\nhooks.before_start = m.f\nrlimit_nofile = 10\n\
         stdout_stream.class = StdoutStream\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    for want in [
        "line 3: [watcher:w] numprocesses: expected an integer from 0 to 100000, got \"two\"",
        "line 4: [watcher:w] NumProcesses: unknown key `NumProcesses`; did you mean `numprocesses`?",
        "line 5: [watcher:w] uid: not supported",
        "line 6: [watcher:w] hooks.before_start: not supported: Circus hooks are Python callables",
        "line 7: [watcher:w] rlimit_nofile: not supported",
        "line 8: [watcher:w] stdout_stream.class: stream class \"StdoutStream\" is not supported",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn includes_are_read_after_the_main_file_which_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/a.ini"),
        "[watcher:a]\ncmd = from-include\nnumprocesses = 3\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("extra.ini"),
        "[watcher:b]\ncmd = b\nnumprocesses = x\n",
    )
    .unwrap();
    let main = dir.path().join("circus.ini");
    let text = "[circus]\ninclude_dir = conf.d\n[watcher:a]\ncmd = main\n";
    std::fs::write(&main, text).unwrap();
    let config = load(&main, text, Environ::default()).unwrap();
    assert_eq!(config.watchers[0].cmd, "main");
    assert_eq!(config.watchers[0].numprocesses, 3);
    let text = "[circus]\ninclude = extra.ini missing*.ini\n";
    let err = load(&main, text, Environ::default())
        .unwrap_err()
        .to_string();
    let extra = dir.path().join("extra.ini");
    assert!(
        err.contains(&format!(
            "{} line 3: [watcher:b] numprocesses",
            extra.display()
        )),
        "{err}"
    );
}

#[test]
fn a_circus_ini_is_known_by_its_name_or_its_first_section() {
    assert!(is_circus_ini(Path::new("/etc/circus/circus.INI"), ""));
    assert!(is_circus_ini(Path::new("circusd.conf"), "# c\n[circus]\n"));
    assert!(is_circus_ini(
        Path::new("circusd.conf"),
        "[watcher:web]\ncmd = x\n"
    ));
    assert!(!is_circus_ini(
        Path::new("troupe-agent.toml"),
        "[agent]\n[watcher.web]\n"
    ));
    assert!(!is_circus_ini(Path::new("troupe-agent.toml"), ""));
}

#[test]
fn a_file_that_is_not_utf8_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("circus.ini");
    std::fs::write(&path, b"[watcher:w]\ncmd = caf\xe9\n").unwrap();
    let err = AgentConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.ends_with("circus.ini: line 2: not UTF-8 text (byte 22 of the file): save it as UTF-8"),
        "{err}"
    );
}
