//! An [`AgentConfig`] written back as `troupe-agent.toml` (what `troupe import` prints): only
//! what differs from the defaults, so that reading the text gives the same config.

use super::{AgentConfig, AgentSettings, HookConfig, OutputConfig, WatcherConfig};
use serde_json::Value;
use std::time::Duration;
use toml::{Table, Value as Toml};

/// The TOML text of `config`.
pub fn to_toml(config: &AgentConfig) -> String {
    let mut root = Table::new();
    let agent = agent_table(&config.agent);
    if !agent.is_empty() {
        root.insert("agent".into(), Toml::Table(agent));
    }
    let mut watchers = Table::new();
    for w in &config.watchers {
        watchers.insert(w.name.clone(), Toml::Table(watcher_table(w)));
    }
    if !watchers.is_empty() {
        root.insert("watcher".into(), Toml::Table(watchers));
    }
    toml::to_string(&root).expect("a TOML table always serializes")
}

fn agent_table(agent: &AgentSettings) -> Table {
    let default = AgentSettings::default();
    let mut t = Table::new();
    let mut put = |key: &str, differs: bool, value: Toml| {
        if differs {
            t.insert(key.into(), value);
        }
    };
    let text = |s: &str| Toml::String(s.to_string());
    let path = |p: &std::path::Path| Toml::String(p.display().to_string());
    let port = |p: u16| Toml::Integer(p.into());
    put("name", agent.name != default.name, text(&agent.name));
    put(
        "cluster",
        agent.cluster != default.cluster,
        text(&agent.cluster),
    );
    put("bind", agent.bind != default.bind, text(&agent.bind));
    put(
        "control_port",
        agent.control_port != default.control_port,
        port(agent.control_port),
    );
    put(
        "pubsub_port",
        agent.pubsub_port != default.pubsub_port,
        port(agent.pubsub_port),
    );
    put(
        "stats_port",
        agent.stats_port != default.stats_port,
        port(agent.stats_port),
    );
    put(
        "stats_interval",
        agent.stats_interval != default.stats_interval,
        duration(agent.stats_interval),
    );
    put(
        "state_dir",
        agent.state_dir != default.state_dir,
        path(&agent.state_dir),
    );
    if let Some(root) = &agent.data_root {
        put("data_root", true, path(root));
    }
    put(
        "mdns",
        agent.mdns != default.mdns,
        Toml::Boolean(agent.mdns),
    );
    if let Some(master) = &agent.master {
        put("master", true, text(master));
    }
    put(
        "allow_remote_exec",
        agent.allow_remote_exec,
        Toml::Boolean(agent.allow_remote_exec),
    );
    put(
        "max_message_size",
        agent.max_message_size != default.max_message_size,
        Toml::Integer(agent.max_message_size as i64),
    );
    let names = |n: &[String]| Toml::Array(n.iter().map(|s| text(s)).collect());
    put(
        "announce_interfaces",
        !agent.announce_interfaces.is_empty(),
        names(&agent.announce_interfaces),
    );
    put(
        "ignore_interfaces",
        !agent.ignore_interfaces.is_empty(),
        names(&agent.ignore_interfaces),
    );
    if let Some(key_file) = &agent.key_file {
        put("key_file", true, path(key_file));
    }
    if let Some(bind) = &agent.circus_bind {
        put("circus_bind", true, text(bind));
    }
    put(
        "circus_control_port",
        agent.circus_control_port != default.circus_control_port,
        port(agent.circus_control_port),
    );
    put(
        "circus_pubsub_port",
        agent.circus_pubsub_port != default.circus_pubsub_port,
        port(agent.circus_pubsub_port),
    );
    put(
        "circus_stats_port",
        agent.circus_stats_port != default.circus_stats_port,
        port(agent.circus_stats_port),
    );
    t
}

fn watcher_table(w: &WatcherConfig) -> Table {
    let d = WatcherConfig::new(&w.name, "");
    let mut t = Table::new();
    let mut put = |key: &str, differs: bool, value: Toml| {
        if differs {
            t.insert(key.into(), value);
        }
    };
    let flag = Toml::Boolean;
    let strings = |items: &[String]| Toml::Array(items.iter().cloned().map(Toml::String).collect());
    put("cmd", true, Toml::String(w.cmd.clone()));
    put("args", w.args != d.args, strings(&w.args));
    put(
        "numprocesses",
        w.numprocesses != d.numprocesses,
        Toml::Integer(w.numprocesses.into()),
    );
    if let Some(dir) = &w.working_dir {
        put("working_dir", true, Toml::String(dir.display().to_string()));
    }
    let env: Table = w
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Toml::String(v.clone())))
        .collect();
    put("env", !env.is_empty(), Toml::Table(env));
    if let Some(files) = &w.env_files {
        put("env_file", true, strings(files));
    }
    put("copy_env", w.copy_env != d.copy_env, flag(w.copy_env));
    put("autostart", w.autostart != d.autostart, flag(w.autostart));
    put("respawn", w.respawn != d.respawn, flag(w.respawn));
    put(
        "max_retry",
        w.max_retry != d.max_retry,
        Toml::Integer(w.max_retry),
    );
    put(
        "warmup_delay",
        w.warmup_delay != d.warmup_delay,
        duration(w.warmup_delay),
    );
    put(
        "graceful_timeout",
        w.graceful_timeout != d.graceful_timeout,
        duration(w.graceful_timeout),
    );
    put(
        "stop_signal",
        w.stop_signal != d.stop_signal,
        signal(w.stop_signal),
    );
    put(
        "stop_children",
        w.stop_children != d.stop_children,
        flag(w.stop_children),
    );
    put(
        "priority",
        w.priority != d.priority,
        Toml::Integer(w.priority),
    );
    put("singleton", w.singleton != d.singleton, flag(w.singleton));
    put("max_age", w.max_age != d.max_age, duration(w.max_age));
    put(
        "max_age_variance",
        w.max_age_variance != d.max_age_variance,
        duration(w.max_age_variance),
    );
    put("shell", w.shell != d.shell, flag(w.shell));
    put("send_hup", w.send_hup != d.send_hup, flag(w.send_hup));
    put(
        "min_uptime",
        w.min_uptime != d.min_uptime,
        duration(w.min_uptime),
    );
    put(
        "backoff_max",
        w.backoff_max != d.backoff_max,
        duration(w.backoff_max),
    );
    let hooks: Table = w.hooks.iter().map(|(k, h)| (k.clone(), hook(h))).collect();
    put("hooks", !hooks.is_empty(), Toml::Table(hooks));
    if let Some(out) = &w.stdout {
        put("stdout", true, output(out));
    }
    if let Some(out) = &w.stderr {
        put("stderr", true, output(out));
    }
    put(
        "log_ring_bytes",
        w.log_ring_bytes != d.log_ring_bytes,
        Toml::Integer(w.log_ring_bytes as i64),
    );
    let s = &w.service;
    if let Some(profile) = s.profile {
        put("profile", true, Toml::String(profile.name().into()));
    }
    if let Some(dir) = &s.profile_dir {
        put("profile_dir", true, Toml::String(dir.display().to_string()));
    }
    if !s.profile_options.is_empty() {
        put(
            "profile_options",
            true,
            json_to_toml(&Value::Object(s.profile_options.clone())),
        );
    }
    let templates: Vec<Toml> = s
        .templates
        .iter()
        .map(|tpl| {
            let mut t = Table::new();
            t.insert(
                "source".into(),
                Toml::String(tpl.source.display().to_string()),
            );
            t.insert("dest".into(), Toml::String(tpl.dest.display().to_string()));
            if let Some(mode) = tpl.mode {
                t.insert("mode".into(), Toml::String(format!("{mode:04o}")));
            }
            Toml::Table(t)
        })
        .collect();
    put("template", !templates.is_empty(), Toml::Array(templates));
    let dirs: Vec<String> = s
        .data_dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    put("data_dir", !dirs.is_empty(), strings(&dirs));
    if let Some(h) = &s.reset_hook {
        put("reset_hook", true, hook(h));
    }
    t
}

/// Whole seconds as an integer, else seconds as a float (what the readers take back).
fn duration(d: Duration) -> Toml {
    if d.subsec_nanos() == 0 {
        Toml::Integer(d.as_secs() as i64)
    } else {
        Toml::Float(d.as_secs_f64())
    }
}

fn signal(number: i32) -> Toml {
    match nix::sys::signal::Signal::try_from(number) {
        Ok(signal) => Toml::String(signal.as_str().trim_start_matches("SIG").into()),
        Err(_) => Toml::Integer(number.into()),
    }
}

fn hook(h: &HookConfig) -> Toml {
    let mut t = Table::new();
    t.insert("cmd".into(), Toml::String(h.cmd.clone()));
    t.insert("ignore_errors".into(), Toml::Boolean(h.ignore_errors));
    t.insert("timeout".into(), duration(h.timeout));
    Toml::Table(t)
}

fn output(o: &OutputConfig) -> Toml {
    let mut t = Table::new();
    t.insert("file".into(), Toml::String(o.file.display().to_string()));
    t.insert("max_bytes".into(), Toml::Integer(o.max_bytes as i64));
    t.insert("backup_count".into(), Toml::Integer(o.backup_count.into()));
    t.insert("time_format".into(), Toml::String(o.time_format.clone()));
    Toml::Table(t)
}

/// JSON (profile options) as TOML; a null has no TOML form and is left out.
fn json_to_toml(value: &Value) -> Toml {
    match value {
        Value::Bool(b) => Toml::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map(Toml::Integer)
            .unwrap_or_else(|| Toml::Float(n.as_f64().unwrap_or_default())),
        Value::String(s) => Toml::String(s.clone()),
        Value::Array(items) => Toml::Array(items.iter().map(json_to_toml).collect()),
        Value::Object(map) => Toml::Table(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), json_to_toml(v)))
                .collect(),
        ),
        Value::Null => Toml::String(String::new()),
    }
}
