//! The controller's modules form layers: none uses a module that uses it back, directly or
//! around a longer circle. Checked here from the sources (every `crate::MODULE` path outside
//! comments), so a new import that closes a circle fails `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module -> the modules it uses, each with a file that does.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The top-level modules that `text` (a file of module `own`) names as `crate::MODULE`,
/// grouped imports (`use crate::{a::X, b}`) included; comment lines are skipped.
fn used_modules(own: &str, text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // One level of grouping is what rustfmt leaves on a `use` line.
                Some(group) => group.split(',').collect(),
                None => vec![rest],
            };
            for name in names {
                let name: String = name
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != own && name != "self" {
                    used.insert(name);
                }
            }
        }
    }
    used
}

/// The import graph of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the crate's sources are readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let first = relative.components().next().expect("a file name");
            let own = Path::new(first.as_os_str())
                .file_stem()
                .expect("a module name")
                .to_string_lossy()
                .to_string();
            if own == "lib" || own == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            let file = relative.display().to_string();
            let uses = graph.entry(own.clone()).or_default();
            for used in used_modules(&own, &text) {
                uses.entry(used).or_insert_with(|| file.clone());
            }
        }
    }
    graph
}

/// A circle in `graph`, as the modules along it (the first repeated at the end), if any.
fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut circle = path[start..].to_vec();
            circle.push(module.to_string());
            return Some(circle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for used in graph.get(module).into_iter().flat_map(BTreeMap::keys) {
            if let Some(circle) = visit(used, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_controller_module_uses_one_that_uses_it_back() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.contains_key("serve") && graph["command"].contains_key("cluster_link"));
    if let Some(circle) = circle(&graph) {
        let steps: Vec<String> = circle
            .windows(2)
            .map(|pair| format!("{} uses crate::{}", graph[&pair[0]][&pair[1]], pair[1]))
            .collect();
        panic!(
            "the controller's modules import each other in a circle: {}\n  {}\nmove what both \
             need into a module below them both",
            circle.join(" -> "),
            steps.join("\n  ")
        );
    }
}

/// The modules of the command line: they print, ask and exit; the daemon uses none of them.
const COMMAND_LINE: &[&str] = &[
    "cli",
    "command",
    "shell",
    "reconfigure",
    "nodes",
    "cluster",
    "ctl",
    "demo",
    "top",
    "docs",
    "keygen",
    "import",
    "stats_command",
];

/// The modules `start` uses, directly or through others, each with the module it was reached
/// from and the file that uses it.
fn reached(graph: &Graph, start: &str) -> BTreeMap<String, (String, String)> {
    let mut reached = BTreeMap::new();
    let mut stack = vec![start.to_string()];
    while let Some(module) = stack.pop() {
        for (used, file) in graph.get(&module).into_iter().flatten() {
            if used != start && !reached.contains_key(used) {
                reached.insert(used.clone(), (module.clone(), file.clone()));
                stack.push(used.clone());
            }
        }
    }
    reached
}

#[test]
fn the_daemon_uses_no_module_of_the_command_line() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for daemon in ["serve", "dashboard"] {
        let reached = reached(&graph, daemon);
        assert!(reached.contains_key("membership"), "{daemon}: {reached:?}");
        for cli in COMMAND_LINE {
            if let Some((from, file)) = reached.get(*cli) {
                panic!("{daemon} reaches the command line's {cli}: {file} (in {from}) uses crate::{cli}");
            }
        }
    }
}

#[test]
fn a_circle_is_found_and_named() {
    let file = |uses: &[&str]| -> BTreeMap<String, String> {
        uses.iter()
            .map(|m| (m.to_string(), "x.rs".to_string()))
            .collect()
    };
    let mut graph = Graph::new();
    graph.insert("cli".into(), file(&["link", "render"]));
    graph.insert("link".into(), file(&["membership"]));
    graph.insert("membership".into(), file(&[]));
    graph.insert("render".into(), file(&[]));
    assert_eq!(circle(&graph), None, "layers");
    graph.insert("membership".into(), file(&["cli"]));
    assert_eq!(
        circle(&graph).unwrap(),
        ["cli", "link", "membership", "cli"],
        "a circle of three"
    );
}

#[test]
fn imports_are_read_from_use_lines_paths_and_groups_not_comments() {
    let text = "use crate::a::X;\nuse crate::{b::Y, c};\n// crate::d\n/// [`crate::e`]\n\
                let x = crate::f::g(crate::own::h);\n";
    let used: Vec<String> = used_modules("own", text).into_iter().collect();
    assert_eq!(used, ["a", "b", "c", "f"]);
}
