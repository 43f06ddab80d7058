//! Keeps `deploy/` true to the code: every metric the Grafana dashboard and the Prometheus
//! alert rules query is a family `Metrics::render` actually exports (or `up`, which
//! Prometheus adds to every scrape). A renamed or removed family fails here, not in an
//! operator's empty panel or silent alert.
//!
//! The PromQL is read without a parser: string literals, label matchers and range or
//! subquery brackets are dropped, and of the identifiers left, those followed by `(`
//! (functions), keywords, and the label lists of `by`/`without`/`on`/`ignoring`/
//! `group_left`/`group_right` are not metric names.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::metrics::Metrics;

const DASHBOARD: &str = "deploy/grafana/portcullis.json";
const ALERTS: &str = "deploy/prometheus/alerts.yml";

/// Series Prometheus itself attaches to every scrape target.
const SCRAPE_SERIES: &[&str] = &["up"];

/// PromQL words that are neither functions nor metrics.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// `(family name, type)` of every `# TYPE` line the gateway renders, with one series of
/// every family created first (routes, upstreams, authenticators and certificates only
/// appear once something names them).
fn exported_families() -> Vec<(String, String)> {
    let metrics = Arc::new(Metrics::new());
    metrics.decisions("staff");
    metrics.route("r").record(200, 0.001);
    metrics.upstream("u");
    metrics.set_certificate_expiry(&[("server".into(), 1_900_000_000)]);
    metrics
        .jwks_refresh
        .get_or_create(&crate::metrics::RefreshLabels {
            authenticator: "idp".into(),
            result: "success",
        })
        .inc();
    metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// Replaces every character of `s` between `open` and its matching `close` (inclusive)
/// with a space; quotes inside have already been blanked.
fn blank_brackets(s: &str, open: char, close: char) -> String {
    let mut depth = 0usize;
    s.chars()
        .map(|c| {
            if c == open {
                depth += 1;
            }
            let inside = depth > 0;
            if c == close && depth > 0 {
                depth -= 1;
            }
            if inside { ' ' } else { c }
        })
        .collect()
}

/// Blanks string literals (`"..."`, `'...'`, `` `...` ``), honouring backslash escapes.
fn blank_strings(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q != '`' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                out.push(' ');
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                out.push(' ');
            }
            None => out.push(c),
        }
    }
    out
}

/// The metric names a PromQL expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let text = blank_strings(expr);
    let text = blank_brackets(&text, '{', '}');
    let text = blank_brackets(&text, '[', ']');
    let chars: Vec<char> = text.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        // A number (1e3, 0.5, 14) or a Grafana variable ($__rate_interval) is no name.
        if c.is_ascii_digit() || c == '.' || c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            if c == '(' && skip_label_list {
                // Skip the label list up to its closing parenthesis.
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_label_list = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        let lower = word.to_ascii_lowercase();
        if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
            skip_label_list = next == Some(&'(');
        } else if KEYWORDS.contains(&lower.as_str()) || next == Some(&'(') {
            // An aggregation or a function.
        } else {
            names.insert(word);
        }
    }
    names
}

/// The `expr` of every panel target in a Grafana dashboard (rows and nested panels too),
/// and the metric of every `label_values(METRIC, label)` variable query.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        ("query" | "definition", serde_json::Value::String(q)) => {
                            if let Some(args) = q
                                .trim()
                                .strip_prefix("label_values(")
                                .and_then(|a| a.strip_suffix(')'))
                            {
                                // label_values(SELECTOR, LABEL): only the selector.
                                let selector = args.rsplit_once(',').map_or(args, |(s, _)| s);
                                out.push(selector.to_string());
                            }
                        }
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The `expr:` values of a Prometheus rules file, one line or a `|`/`>` block.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start().trim_start_matches("- ");
        i += 1;
        let Some(value) = body.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let mut block = String::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push('\n');
                i += 1;
            }
            out.push(block);
        } else {
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            out.push(unquoted.to_string());
        }
    }
    out
}

/// Names in `exprs` that are neither an exported family (histograms also by their
/// `_bucket`/`_sum`/`_count` series) nor a series Prometheus adds, with the expression.
fn unknown_names(exprs: &[String], families: &[(String, String)]) -> Vec<String> {
    let known = |name: &str| {
        if SCRAPE_SERIES.contains(&name) || families.iter().any(|(f, _)| f == name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                families
                    .iter()
                    .any(|(f, kind)| f == base && kind == "histogram")
            })
        })
    };
    let mut unknown = Vec::new();
    for expr in exprs {
        for name in metric_names(expr) {
            if !known(&name) {
                unknown.push(format!("`{name}` in `{}`", expr.trim()));
            }
        }
    }
    unknown
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn extracts_metric_names_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{job=~"$job", x="}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("sum by (job) (rate(a_total{s=~\"5..\"}[5m])) / on (job) group_left (x) b > 0.05"),
        ["a_total", "b"]
    );
    assert_eq!(
        names("c - time() < 14 * 86400 unless d offset 1h and 1e3 > bool up"),
        ["c", "d", "up"]
    );
    assert_eq!(names("count by (version) (e{job=\"a b\"})"), ["e"]);
}

#[test]
fn flags_names_the_gateway_does_not_export() {
    let families = exported_families();
    let exprs = vec![
        "rate(portcullis_requests_total[5m])".to_string(),
        "rate(portcullis_request_duration_seconds_bucket[5m])".to_string(),
        "portcullis_request_total".to_string(),
        "portcullis_active_connections_bucket".to_string(),
    ];
    assert_eq!(
        unknown_names(&exprs, &families),
        [
            "`portcullis_request_total` in `portcullis_request_total`",
            "`portcullis_active_connections_bucket` in `portcullis_active_connections_bucket`",
        ]
    );
}

#[test]
fn reads_single_line_and_block_exprs_from_rules() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: |\n          sum(\n            x)\n          > 0\n        labels:\n          severity: warning\n      - expr: \"y > 1\"\n";
    assert_eq!(rule_exprs(yaml), ["up == 0", "sum(\nx)\n> 0\n", "y > 1"]);
}

#[test]
fn dashboard_names_only_exported_metrics() {
    let text = read(DASHBOARD);
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let exprs = dashboard_exprs(&dashboard);
    assert!(
        exprs.len() >= 20,
        "{DASHBOARD}: only {} queries found",
        exprs.len()
    );
    let unknown = unknown_names(&exprs, &exported_families());
    assert!(
        unknown.is_empty(),
        "{DASHBOARD} queries metrics the gateway does not export:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn alert_rules_name_only_exported_metrics() {
    let exprs = rule_exprs(&read(ALERTS));
    let alerts = read(ALERTS)
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(exprs.len(), alerts, "{ALERTS}: one expr per alert");
    let unknown = unknown_names(&exprs, &exported_families());
    assert!(
        unknown.is_empty(),
        "{ALERTS} queries metrics the gateway does not export:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_exported_family_is_on_the_dashboard() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let named: BTreeSet<String> = dashboard_exprs(&dashboard)
        .iter()
        .flat_map(|e| metric_names(e))
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .map_or(n.clone(), str::to_string)
        })
        .collect();
    let missing: Vec<String> = exported_families()
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| !named.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "{DASHBOARD} has no panel for: {}",
        missing.join(", ")
    );
}
