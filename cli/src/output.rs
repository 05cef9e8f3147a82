//! How results are printed: tables and `key: value` blocks for people, the API's own JSON
//! (`-o json`) or the same as YAML (`-o yaml`) for scripts. Machine formats print exactly what
//! the host answered, so a script written against the API reads the CLI's output unchanged.

use serde_json::Value;
use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Columns for people.
    #[default]
    Table,
    /// The API's JSON, one document.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Prints a value as JSON or YAML; `false` when the format is `table` (the caller prints).
pub fn machine(format: Format, value: &Value) -> bool {
    let text = match format {
        Format::Table => return false,
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_default(),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    true
}

/// A field of a JSON object as a table cell: strings bare, null as `-`, nested values as JSON.
pub fn cell(v: &Value, key: &str) -> String {
    show(v.get(key).unwrap_or(&Value::Null))
}

pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() => "-".into(),
        other => other.to_string(),
    }
}

/// Plain aligned columns, as kubectl prints them; the last column is not padded.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(n) {
                // Control characters from the host (a task name, an error) must not drive the
                // user's terminal.
                let c: String = c
                    .chars()
                    .map(|ch| if ch.is_control() { '?' } else { ch })
                    .collect();
                if i + 1 == n {
                    line.push_str(&c);
                } else {
                    line.push_str(&c);
                    line.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `key: value` lines for one object, in the order given; absent keys left out.
pub fn fields(v: &Value, keys: &[(&str, &str)]) -> String {
    let width = keys.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, key) in keys {
        if let Some(x) = v.get(*key) {
            if x.is_null() {
                continue;
            }
            let text: String = show(x)
                .chars()
                .map(|ch| {
                    if ch.is_control() && ch != '\n' {
                        '?'
                    } else {
                        ch
                    }
                })
                .collect();
            out.push_str(&format!("{label:width$}  {text}\n"));
        }
    }
    out
}

/// Whether progress and colour may be drawn: stdout and stderr are terminals.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::io::stdout().is_terminal()
}

/// Bytes as people read them (`1.5 GiB`).
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_neutralise_control_characters() {
        let mut t = Table::new(&["ID", "STATUS", "NAME"]);
        t.row(vec!["1".into(), "running".into(), "a\x1b[2Jb".into()]);
        t.row(vec!["12345".into(), "-".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "ID     STATUS   NAME\n1      running  a?[2Jb\n12345  -        x\n"
        );
    }

    #[test]
    fn cells_show_nulls_as_dashes() {
        let v = json!({"a": null, "b": "x", "c": 3, "d": [], "e": [[0, 1]]});
        let got: Vec<String> = ["a", "b", "c", "d", "e", "missing"]
            .iter()
            .map(|k| cell(&v, k))
            .collect();
        assert_eq!(got, ["-", "x", "3", "-", "[[0,1]]", "-"]);
    }
}
