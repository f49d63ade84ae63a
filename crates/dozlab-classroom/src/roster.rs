//! The class roster: a CSV file with a header row, one student per line.
//!
//! Columns (any order, case-insensitive): `id` (required; alias `student`),
//! `user` (alias `user_id`, `userid`; default: the id), `name`, `email`.
//! Blank lines and lines starting with `#` are ignored. Ids are turned into
//! DNS-1123 names (`Bob_Smith` → `bob-smith`), users into label values;
//! every bad line is reported, each naming its line number.

use crate::names;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// One validated roster line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Student {
    /// 1-based line number in the file.
    pub line: u64,
    /// The id as written.
    pub raw_id: String,
    /// The id as a DNS-1123 label.
    pub id: String,
    /// The user id as a label value.
    pub user: String,
    pub name: String,
    pub email: String,
}

/// A problem on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why a roster was refused.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("cannot read roster {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("roster {path} is not valid CSV")]
    Csv {
        path: String,
        #[source]
        source: csv::Error,
    },
    #[error(
        "roster {path}: the header row has no `id` column; the first line must name the columns, e.g. `id,user,name,email`"
    )]
    NoIdColumn { path: String },
    #[error(
        "roster {path}: unknown column {column:?} in the header; known columns: id, user, name, email"
    )]
    UnknownColumn { path: String, column: String },
    #[error("roster {path} has no students (only a header, comments or blank lines)")]
    Empty { path: String },
    #[error("roster {path} has {} invalid line(s); fix them and run again:\n  {}", errors.len(), list(errors))]
    Invalid {
        path: String,
        errors: Vec<LineError>,
    },
}

fn list(errors: &[LineError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[derive(Debug, Default)]
struct Columns {
    id: Option<usize>,
    user: Option<usize>,
    name: Option<usize>,
    email: Option<usize>,
}

/// Reads and validates the roster at `path`; ids may be at most `max_id` characters.
pub fn read(path: &Path, max_id: usize) -> Result<Vec<Student>, RosterError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| RosterError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&data, &shown, max_id)
}

/// Parses and validates roster bytes (`path` is only used in messages).
pub fn parse(data: &[u8], path: &str, max_id: usize) -> Result<Vec<Student>, RosterError> {
    // Spreadsheet exports often start with a UTF-8 byte-order mark.
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let csv_err = |source| RosterError::Csv {
        path: path.into(),
        source,
    };
    // Comments and field counts are handled here: the csv crate's comment
    // support loses track of line numbers.
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(data);
    let headers = rdr.headers().map_err(csv_err)?.clone();
    let cols = columns(&headers, path)?;
    let mut students = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, (u64, String)> = HashMap::new();
    for record in rdr.records() {
        let record = record.map_err(csv_err)?;
        // The csv crate's own line count skips comment lines: count newlines.
        let line = record
            .position()
            .map(|p| line_of(data, p.byte()))
            .unwrap_or(0);
        if record.get(0).is_some_and(|f| f.starts_with('#')) {
            continue;
        }
        if record.len() != headers.len() {
            errors.push(LineError {
                line,
                message: format!(
                    "{} field(s) where the header has {}; quote fields that contain commas",
                    record.len(),
                    headers.len()
                ),
            });
            continue;
        }
        match student(&record, &cols, line, max_id) {
            Ok(s) => {
                if let Some((first, raw)) = seen.get(&s.id) {
                    errors.push(LineError {
                        line,
                        message: format!(
                            "id {:?} becomes {:?}, already used by line {first} ({raw:?}); give every student a distinct id",
                            s.raw_id, s.id
                        ),
                    });
                } else {
                    seen.insert(s.id.clone(), (line, s.raw_id.clone()));
                    students.push(s);
                }
            }
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    if !errors.is_empty() {
        return Err(RosterError::Invalid {
            path: path.into(),
            errors,
        });
    }
    if students.is_empty() {
        return Err(RosterError::Empty { path: path.into() });
    }
    Ok(students)
}

/// 1-based line number of the record at byte offset `byte` (the csv crate's
/// offset may point at blank lines skipped before the record).
fn line_of(data: &[u8], byte: u64) -> u64 {
    let mut end = usize::try_from(byte).unwrap_or(data.len()).min(data.len());
    while end < data.len() && matches!(data[end], b'\n' | b'\r') {
        end += 1;
    }
    data[..end].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn columns(headers: &csv::StringRecord, path: &str) -> Result<Columns, RosterError> {
    let mut cols = Columns::default();
    for (i, h) in headers.iter().enumerate() {
        let slot = match h.to_ascii_lowercase().as_str() {
            "id" | "student" => &mut cols.id,
            "user" | "user_id" | "userid" => &mut cols.user,
            "name" => &mut cols.name,
            "email" => &mut cols.email,
            _ => {
                return Err(RosterError::UnknownColumn {
                    path: path.into(),
                    column: h.into(),
                });
            }
        };
        *slot = Some(i);
    }
    if cols.id.is_none() {
        return Err(RosterError::NoIdColumn { path: path.into() });
    }
    Ok(cols)
}

fn student(
    record: &csv::StringRecord,
    cols: &Columns,
    line: u64,
    max_id: usize,
) -> Result<Student, String> {
    let get = |c: Option<usize>| c.and_then(|i| record.get(i)).unwrap_or("").to_string();
    let raw_id = get(cols.id);
    if raw_id.is_empty() {
        return Err("the id is empty; every student needs an id".into());
    }
    let id = names::to_dns_label(&raw_id);
    if id.is_empty() {
        return Err(format!(
            "id {raw_id:?} has no ASCII letter or digit to make a Kubernetes name from; use letters, digits and '-'"
        ));
    }
    if id.len() > max_id {
        return Err(format!(
            "id {raw_id:?} becomes {id:?}, {} characters long; at most {max_id} fit in the session's Kubernetes names",
            id.len()
        ));
    }
    let raw_user = get(cols.user);
    let user = if raw_user.is_empty() {
        id.clone()
    } else {
        names::to_label_value(&raw_user)
    };
    if user.is_empty() || user.len() > names::MAX_LABEL_VALUE {
        return Err(format!(
            "user {raw_user:?} cannot be a Kubernetes label value (1-63 letters, digits, '-', '_', '.')"
        ));
    }
    Ok(Student {
        line,
        raw_id,
        id,
        user,
        name: get(cols.name),
        email: get(cols.email),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<Student> {
        parse(s.as_bytes(), "r.csv", 40).unwrap()
    }

    fn bad(s: &str) -> RosterError {
        parse(s.as_bytes(), "r.csv", 40).unwrap_err()
    }

    #[test]
    fn good_roster_is_normalised() {
        let s = ok(
            "id,user,name,email\n# comment\nAlice,alice@example.com,Alice A,a@x\n\nBob_Smith,,Bob,\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].id.as_str(), s[0].user.as_str()),
            ("alice", "alice-example.com")
        );
        assert_eq!(s[0].line, 3);
        assert_eq!(
            (s[1].id.as_str(), s[1].user.as_str()),
            ("bob-smith", "bob-smith")
        );
        assert_eq!(s[1].line, 5);
    }

    #[test]
    fn spreadsheet_exports_with_bom_and_crlf_are_read() {
        let s = ok("\u{feff}ID,Name\r\nalice,Alice\r\n\r\nbob,Bob\r\n");
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].id.as_str(), s[1].line), ("bob", 4));
        assert_eq!(s[0].name, "Alice");
    }

    #[test]
    fn only_id_column_is_needed() {
        let s = ok("student\ncharlie\n");
        assert_eq!(s[0].user, "charlie");
    }

    #[test]
    fn duplicates_and_invalid_ids_name_their_lines() {
        let e = bad("id\nalice\nbob\nAlice\n!!!\n\n");
        let RosterError::Invalid { errors, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 4);
        assert!(
            errors[0].message.contains("already used by line 2"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1].line, 5);
        assert!(e.to_string().contains("line 5: id \"!!!\""), "{e}");
    }

    #[test]
    fn empty_and_too_long_ids_are_refused() {
        let e = bad(&format!("id,name\n,x\n{},y\n", "a".repeat(41)));
        let msg = e.to_string();
        assert!(msg.contains("line 2: the id is empty"), "{msg}");
        assert!(msg.contains("line 3: id"), "{msg}");
    }

    #[test]
    fn header_problems_are_explained() {
        assert!(matches!(
            bad("name,email\nx,y\n"),
            RosterError::NoIdColumn { .. }
        ));
        assert!(matches!(
            bad("id,usre\nx,y\n"),
            RosterError::UnknownColumn { .. }
        ));
        assert!(matches!(bad("id\n# nobody\n"), RosterError::Empty { .. }));
        let e = bad("id,name\na,b,c\n").to_string();
        assert!(
            e.contains("line 2: 3 field(s) where the header has 2"),
            "{e}"
        );
    }
}
