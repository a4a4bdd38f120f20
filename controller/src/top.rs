//! `troupe top`: a live terminal view of the whole cluster (nodes with their totals, watchers,
//! processes), refreshed each second. Keys: `c`/`m`/`a` sort by CPU, memory, age; `/` types a
//! filter on node or watcher names (Enter keeps it, Esc clears it); `q` quits.
//!
//! Through a running `troupe serve` it reads the controller's stats socket; otherwise it
//! discovers the nodes and subscribes to each itself. Either way a local stats actor builds
//! the snapshots, so staleness is judged the same way. The terminal is restored on quit,
//! on error, and on panic (ratatui's panic hook).

use crate::cluster_link::ClusterLink;
use crate::settings::NodeFlags;
use crate::stats::snapshot::Snapshot;
use crate::stats::view::{rows, summary, Row as ViewRow, RowKind, SortKey};
use crate::stats::{Feed, StatsHandle};
use anyhow::Context;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;
use serde_json::Map;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use troupe::protocol::{format_mem, Request};

const REFRESH: Duration = Duration::from_secs(1);

pub async fn run(flags: NodeFlags) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("troupe top needs a terminal; `troupe stats` prints one snapshot");
    }
    // The link keeps a one-shot discovery (and its heartbeats) alive for the session.
    let link = ClusterLink::connect(&flags).await?;
    let (feed, source) = match &link {
        ClusterLink::Controller(endpoint) => {
            let stats = controller_stats_endpoint(endpoint).await?;
            (
                Feed::Controller(stats.clone()),
                format!("troupe serve {endpoint} (stats {stats})"),
            )
        }
        ClusterLink::Local { membership, .. } | ClusterLink::Kept { membership, .. } => (
            Feed::Members(membership.clone()),
            format!(
                "nodes discovered on the spot (no troupe serve at {})",
                flags.controller_endpoint()
            ),
        ),
    };
    // top shows the latest figures only: no history to keep.
    let (stats, _actor) = crate::stats::spawn(feed, None, false);
    let mut terminal = TerminalGuard::start()?;
    let result = ui_loop(&mut terminal.0, &stats, &source).await;
    drop(terminal);
    drop(link);
    result.map(|()| ExitCode::SUCCESS)
}

/// The controller's stats socket, from its `globaloptions`, at the host we reach it on.
async fn controller_stats_endpoint(control: &str) -> anyhow::Result<String> {
    let zmq = zmq::Context::new();
    let request = Request::new("globaloptions", Map::new());
    let reply = troupe::client::call_async(&zmq, control, request, Duration::from_secs(3)).await?;
    reply["options"]["stats_endpoint"]
        .as_str()
        .and_then(|stats| crate::stats::reader::port_at_control_host(stats, control))
        .with_context(|| format!("the controller at {control} did not say where its stats are"))
}

/// Raw mode and the alternate screen for as long as it lives.
struct TerminalGuard(ratatui::DefaultTerminal);

impl TerminalGuard {
    fn start() -> anyhow::Result<Self> {
        // try_init also installs a panic hook that restores the terminal first.
        let terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
        Ok(TerminalGuard(terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    stats: &StatsHandle,
    source: &str,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut app = App::default();
    let mut keys = EventStream::new();
    let mut refresh = tokio::time::interval(REFRESH);
    // Ended by a signal, it still returns, so the guard restores the terminal.
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        terminal.draw(|frame| draw(frame, &app, source))?;
        tokio::select! {
            _ = refresh.tick() => {
                if let Some(snapshot) = stats.snapshot().await {
                    app.snapshot = snapshot;
                }
            }
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => {
                    if app.on_key(key) == Action::Quit {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {} // a resize: redrawn at the top of the loop
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => return Ok(()),
            },
            _ = term.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        }
    }
}

/// The view's state: what is shown and how.
#[derive(Debug)]
struct App {
    snapshot: Snapshot,
    sort: SortKey,
    filter: String,
    /// Typing a filter (after `/`).
    editing: bool,
}

impl Default for App {
    fn default() -> Self {
        App {
            snapshot: Snapshot::default(),
            sort: SortKey::Cpu,
            filter: String::new(),
            editing: false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Continue,
    Quit,
}

impl App {
    fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        if self.editing {
            match key.code {
                KeyCode::Char(c) => self.filter.push(c),
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.editing = false;
                }
                _ => {}
            }
            return Action::Continue;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('c') => self.sort = SortKey::Cpu,
            KeyCode::Char('m') => self.sort = SortKey::Mem,
            KeyCode::Char('a') => self.sort = SortKey::Age,
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Esc => self.filter.clear(),
            _ => {}
        }
        Action::Continue
    }
}

fn draw(frame: &mut Frame, app: &App, source: &str) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let (nodes, stale, processes, cpu, rss) = summary(&app.snapshot);
    let title = Line::from(vec!["troupe top".bold(), format!("  {source}").into()]);
    let figures = format!(
        "{nodes} nodes ({stale} stale)  {processes} processes  CPU {cpu:.1}%  RSS {}  sort: {}{}",
        format_mem(rss),
        app.sort.label(),
        if app.filter.is_empty() {
            String::new()
        } else {
            format!("  filter: {}", app.filter)
        }
    );
    frame.render_widget(
        ratatui::widgets::Paragraph::new(vec![title, Line::from(figures)]),
        header,
    );
    let lines = rows(&app.snapshot, app.sort, &app.filter);
    frame.render_widget(table(&lines, app.sort), body);
    let help = if app.editing {
        format!("filter: {}_   Enter keep  Esc clear", app.filter)
    } else {
        "q quit  c/m/a sort by cpu/mem/age  / filter  Esc clear filter".to_string()
    };
    frame.render_widget(Line::from(help).reversed(), footer);
}

fn table(lines: &[ViewRow], sort: SortKey) -> Table<'static> {
    let mark = |key: SortKey, label: &str| {
        if key == sort {
            format!("{label}▼")
        } else {
            label.to_string()
        }
    };
    let header = Row::new(vec![
        Cell::from("NODE / WATCHER / PROCESS"),
        Cell::from("PID"),
        Cell::from(mark(SortKey::Cpu, "CPU%")),
        Cell::from(mark(SortKey::Mem, "MEM%")),
        Cell::from("RSS"),
        Cell::from(mark(SortKey::Age, "AGE")),
        Cell::from("STATE"),
    ])
    .add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    let body = lines.iter().map(|line| {
        let (name, style) = match line.kind {
            RowKind::Node { stale: true } => (line.name.clone(), Style::new().bold().yellow()),
            RowKind::Node { stale: false } => (line.name.clone(), Style::new().bold()),
            RowKind::Watcher => (format!("  {}", line.name), Style::new()),
            RowKind::Process => (format!("    {}", line.name), Style::new().dim()),
        };
        Row::new(vec![
            Cell::from(name),
            Cell::from(line.pid.clone()),
            Cell::from(format!("{:.1}", line.cpu)),
            Cell::from(format!("{:.2}", line.mem)),
            Cell::from(format_mem(line.rss)),
            Cell::from(age(line.age)),
            Cell::from(line.state.clone()),
        ])
        .style(style)
    });
    Table::new(
        body,
        [
            Constraint::Length(40),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .column_spacing(2)
}

/// Seconds as "42s", "5m03s", "2h04m".
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::model::ClusterStats;
    use crate::stats::payload::Payload;
    use crate::stats::topic::Topic;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use serde_json::json;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_sort_filter_and_quit() {
        let mut app = App::default();
        assert_eq!(app.on_key(key(KeyCode::Char('m'))), Action::Continue);
        assert_eq!(app.sort, SortKey::Mem);
        app.on_key(key(KeyCode::Char('a')));
        assert_eq!(app.sort, SortKey::Age);
        app.on_key(key(KeyCode::Char('/')));
        for c in "web q".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Backspace));
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(app.filter, "web", "q is text while typing a filter");
        app.on_key(key(KeyCode::Enter));
        assert!(!app.editing);
        app.on_key(key(KeyCode::Char('c')));
        assert_eq!(app.sort, SortKey::Cpu);
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.filter, "");
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(App::default().on_key(ctrl_c), Action::Quit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_shows_nodes_watchers_processes_and_a_cpu_column() {
        let mut stats = ClusterStats::default();
        let now = tokio::time::Instant::now();
        let info = json!({"pid": 42, "cpu": 97.5, "mem": 0.1, "age": 75.0,
                          "mem_info1": "1.50M", "cmdline": "sh"});
        let topic = |pid| Topic {
            watcher: "busy".into(),
            pid,
        };
        stats.ingest(
            "node-a",
            &topic(Some(42)),
            Payload::of_value(&info).unwrap(),
            now,
        );
        stats.ingest(
            "node-a",
            &topic(None),
            Payload::of_value(&json!({"pid": [42]})).unwrap(),
            now,
        );
        let app = App {
            snapshot: stats.snapshot(now, 0.0),
            ..App::default()
        };
        let mut terminal = Terminal::new(TestBackend::new(120, 10)).unwrap();
        terminal.draw(|f| draw(f, &app, "test")).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .chunks(120)
            .map(|line| line.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        assert!(screen.contains("CPU%▼"), "{screen}");
        assert!(screen.contains("node-a"), "{screen}");
        assert!(screen.contains("  busy"), "{screen}");
        assert!(screen.contains("    sh"), "{screen}");
        assert!(screen.contains("97.5"), "{screen}");
        assert!(screen.contains("1m15s"), "{screen}");
        assert!(
            screen.contains("1 nodes (0 stale)  1 processes"),
            "{screen}"
        );
    }

    #[test]
    fn ages_read_like_top() {
        assert_eq!(age(42.9), "42s");
        assert_eq!(age(303.0), "5m03s");
        assert_eq!(age(7440.0), "2h04m");
    }
}
