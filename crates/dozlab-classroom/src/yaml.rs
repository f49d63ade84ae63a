//! A small YAML writer for the documents this crate emits (HelmRelease,
//! Secret, values files).
//!
//! Block style, two-space indent, map keys sorted (serde_json's map order;
//! `apiVersion, kind, metadata, spec` happen to sort naturally); every string
//! scalar is written as a JSON string, which is a valid YAML double-quoted
//! scalar, so no value can change type or break the document ("yes", "010",
//! ": " and newlines stay strings).

use serde_json::Value;
use std::fmt::Write as _;

/// One YAML document (without the leading `---`).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            let _ = writeln!(out, "{}", scalar(other));
        }
    }
    out
}

/// Several documents separated by `---`.
pub fn to_yaml_stream(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", to_yaml(d)))
        .collect()
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in map {
        let _ = write!(out, "{:indent$}{}:", "", key(k));
        write_child(out, v, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for v in items {
        let _ = write!(out, "{:indent$}-", "");
        match v {
            Value::Object(m) if !m.is_empty() => {
                // First entry on the dash line, the rest aligned under it.
                let mut first = String::new();
                write_map(&mut first, m, indent + 2);
                let _ = write!(out, " {}", &first[indent + 2..]);
            }
            _ => write_child(out, v, indent),
        }
    }
}

fn write_child(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, indent + 2);
        }
        other => {
            let _ = writeln!(out, " {}", scalar(other));
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// Keys made only of safe characters (and not YAML keywords or numbers) stay plain.
fn key(k: &str) -> String {
    let safe = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && k.starts_with(|c: char| c.is_ascii_alphabetic())
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if safe {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_nested_block_yaml() {
        let v = json!({
            "apiVersion": "v1",
            "metadata": {"name": "x", "labels": {}},
            "list": [{"a": 1, "b": {"c": true}}, "s", []],
            "yes": "no",
            "n": null
        });
        let y = to_yaml(&v);
        let want = "apiVersion: \"v1\"\nlist:\n  - a: 1\n    b:\n      c: true\n  - \"s\"\n  - []\nmetadata:\n  labels: {}\n  name: \"x\"\n\"n\": null\n\"yes\": \"no\"\n";
        assert_eq!(y, want);
    }

    #[test]
    fn strings_are_always_quoted_safely() {
        let y = to_yaml(&json!({"p": "a: b\n#c \"d\""}));
        assert_eq!(y, "p: \"a: b\\n#c \\\"d\\\"\"\n");
        assert_eq!(
            to_yaml_stream(&[json!({"a": 1}), json!({"b": 2})]),
            "---\na: 1\n---\nb: 2\n"
        );
    }
}
