//! The capability table of `--fd-from @PATH` or `-`: fd grants as S-expressions.
//!
//! A table is a sequence of `fd` forms, each in either shape of the seeds (and the two may be
//! mixed, even within a form):
//!
//! ```lisp
//! (fd :name "db" :fd 3 :mode "rw")                 ; keywords
//! (fd (name "cache") (fd 4) (mode "r") (type "file")) ; key lists
//! ```
//!
//! The forms may stand at the top level one after another, or inside one outer list as in
//! seed 003: `((fd …) (fd …))`; `()` is an empty table. Keys are those of `--fd`
//! (`mode`, `type`, `target`, `move`, `cloexec`, `pathlink`) plus the required `name` and `fd`.
//! A value is a string, a symbol, a non-negative integer or a boolean: `name`, `mode` and
//! `type` take a string or a symbol, `fd` and `target` an integer, the booleans `#t`/`#f` or
//! `true`/`false`. `;` starts a comment.
//!
//! Every error carries the table's line and column and the span of the form or value at fault.
//! Parsing uses the `lexpr` crate (its `datum` API keeps positions), with `:keyword` syntax on.

use std::io::Read;
use std::sync::Arc;

use lexpr::Value;
use lexpr::datum::{Ref, Span};
use lexpr::parse::{KeywordSyntax, Options, Parser, Position};

use super::error::{FdError, FdErrorKind, Origin};
use super::spec::{FdSpec, GrantOptions, OPTION_KEYS, check_name, parse_number};

/// The largest table ww reads (1 MiB): a capability table is a handful of lines.
pub const MAX_TABLE_BYTES: u64 = 1 << 20;

/// One parsed table entry and where it stands.
#[derive(Debug, Clone)]
pub struct TableEntry {
    /// The grant as written.
    pub spec: FdSpec,
    /// The `(fd …)` form's position, for later errors about this grant.
    pub origin: Origin,
}

/// Which of the two shapes [`render`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `(fd :name "db" :fd 3 …)`
    Keywords,
    /// `(fd (name "db") (fd 3) …)`
    Lists,
}

/// Reads the table an `--fd-from` value names: `@PATH` a file, `-` standard input (`stdin`).
/// Returns the table's display name (`PATH` or `<stdin>`) and its text.
pub fn load(value: &str, stdin: &mut dyn Read) -> Result<(String, String), FdError> {
    let at = || Origin::flag("--fd-from", value);
    let read_err = |reason: String| FdError::new(FdErrorKind::TableRead { reason }, at());
    let (name, mut bytes) = if value == "-" {
        let mut bytes = Vec::new();
        stdin
            .take(MAX_TABLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(format!("standard input: {e}")))?;
        ("<stdin>".to_owned(), bytes)
    } else if let Some(path) = value.strip_prefix('@').filter(|p| !p.is_empty()) {
        let file = std::fs::File::open(path).map_err(|e| read_err(format!("{path}: {e}")))?;
        let mut bytes = Vec::new();
        file.take(MAX_TABLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(format!("{path}: {e}")))?;
        (path.to_owned(), bytes)
    } else {
        return Err(FdError::new(FdErrorKind::FdFromSyntax, at()));
    };
    if bytes.len() as u64 > MAX_TABLE_BYTES {
        return Err(read_err(format!(
            "{name} is larger than {MAX_TABLE_BYTES} bytes"
        )));
    }
    bytes.shrink_to_fit();
    let text = String::from_utf8(bytes).map_err(|e| read_err(format!("{name}: {e}")))?;
    Ok((name, text))
}

/// Positions → byte offsets and [`Origin`]s in one table's text.
struct Source {
    file: String,
    text: Arc<str>,
    line_starts: Vec<usize>,
}

impl Source {
    fn new(file: &str, text: &str) -> Source {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            file: file.to_owned(),
            text: Arc::from(text),
            line_starts,
        }
    }

    /// The byte offset of a one-based line and zero-based byte column, clamped to the text.
    fn offset(&self, line: usize, column0: usize) -> usize {
        let start = self
            .line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.text.len());
        start.saturating_add(column0).min(self.text.len())
    }

    fn origin(&self, start: (usize, usize), len: usize) -> Origin {
        let offset = self.offset(start.0, start.1);
        Origin::Table {
            file: self.file.clone(),
            line: start.0.max(1),
            column: start.1 + 1,
            span: (offset, len.min(self.text.len() - offset)).into(),
            text: self.text.clone(),
        }
    }

    fn span_origin(&self, span: Span) -> Origin {
        let pos = |p: Position| (p.line(), p.column());
        let (start, end) = (pos(span.start()), pos(span.end()));
        let len = self
            .offset(end.0, end.1)
            .saturating_sub(self.offset(start.0, start.1));
        self.origin(start, len)
    }

    fn error(&self, kind: FdErrorKind, at: Ref<'_>) -> FdError {
        FdError::new(kind, self.span_origin(at.span()))
    }

    fn shape(&self, message: &str, at: Ref<'_>) -> FdError {
        self.error(
            FdErrorKind::TableShape {
                message: message.to_owned(),
            },
            at,
        )
    }
}

/// Parses a capability table (see the module docs). `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<TableEntry>, FdError> {
    let source = Source::new(file, text);
    let options = Options::new().with_keyword_syntax(KeywordSyntax::ColonPrefix);
    let mut parser = Parser::from_str_custom(text, options);
    let mut entries = Vec::new();
    for datum in parser.datum_iter() {
        let datum = datum.map_err(|e| syntax_error(&source, &e))?;
        let top = datum.as_ref();
        if is_fd_form(top) {
            entries.push(form(&source, top)?);
            continue;
        }
        let items = proper_list(&source, top, "expected an (fd …) form or a list of them")?;
        for item in items {
            if !is_fd_form(item) {
                return Err(source.shape("expected an (fd …) form", item));
            }
            entries.push(form(&source, item)?);
        }
    }
    Ok(entries)
}

/// Renders grants as a table in `shape`, inside one outer list, one form a line.
/// [`parse`] reads it back to equal specs.
pub fn render(specs: &[FdSpec], shape: Shape) -> String {
    let mut out = String::from("(\n");
    for spec in specs {
        let mut pairs = vec![
            ("name", format!("\"{}\"", spec.name)),
            ("fd", spec.fd.to_string()),
        ];
        for (key, value) in spec.options.items() {
            let value = match key {
                "mode" | "type" => format!("\"{value}\""),
                "move" | "cloexec" | "pathlink" if value == "true" => "#t".to_owned(),
                "move" | "cloexec" | "pathlink" => "#f".to_owned(),
                _ => value,
            };
            pairs.push((key, value));
        }
        out.push_str("  (fd");
        for (key, value) in pairs {
            match shape {
                Shape::Keywords => out.push_str(&format!(" :{key} {value}")),
                Shape::Lists => out.push_str(&format!(" ({key} {value})")),
            }
        }
        out.push_str(")\n");
    }
    out.push(')');
    out
}

fn syntax_error(source: &Source, e: &lexpr::parse::Error) -> FdError {
    let message = e.to_string();
    // lexpr appends " at line L column C"; the origin says where already.
    let message = match message.rsplit_once(" at line ") {
        Some((head, _)) if e.location().is_some() => head.to_owned(),
        _ => message,
    };
    let (line, column1) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((source.line_starts.len(), 1));
    FdError::new(
        FdErrorKind::TableSyntax { message },
        source.origin((line, column1.saturating_sub(1)), 1),
    )
}

fn is_fd_form(r: Ref<'_>) -> bool {
    r.as_pair()
        .is_some_and(|(head, _)| head.value().as_symbol() == Some("fd"))
}

/// The elements of a proper list, or an error naming `what` was expected.
fn proper_list<'a>(source: &Source, r: Ref<'a>, what: &str) -> Result<Vec<Ref<'a>>, FdError> {
    let Some(mut iter) = r.list_iter() else {
        return Err(source.shape(what, r));
    };
    let items: Vec<Ref<'a>> = iter.by_ref().collect();
    if !iter.is_empty() {
        return Err(source.shape("a dotted list is not a table entry", r));
    }
    Ok(items)
}

/// One `(fd …)` form.
fn form(source: &Source, r: Ref<'_>) -> Result<TableEntry, FdError> {
    let items = proper_list(source, r, "expected an (fd …) form")?;
    let mut name: Option<String> = None;
    let mut fd: Option<i32> = None;
    let mut options = GrantOptions::default();
    let mut rest = items.into_iter().skip(1);
    while let Some(item) = rest.next() {
        let (key, key_at, value) = if let Some(key) = item.value().as_keyword() {
            let value = rest.next().ok_or_else(|| {
                source.shape(&format!("keyword :{key} has no value after it"), item)
            })?;
            (key, item, value)
        } else {
            let pair = proper_list(source, item, "expected :key value or (key value)")?;
            match pair.as_slice() {
                [key, value] if key.value().as_symbol().is_some() => {
                    (key.value().as_symbol().unwrap_or_default(), *key, *value)
                }
                _ => return Err(source.shape("expected :key value or (key value)", item)),
            }
        };
        let Some(text) = atom_text(value.value()) else {
            return Err(source.shape(
                &format!("the value of `{key}` must be a string, symbol, number or boolean"),
                value,
            ));
        };
        let at_value = |kind| source.error(kind, value);
        match key {
            "name" => {
                if name.is_some() {
                    return Err(source.error(FdErrorKind::DuplicateKey { key: key.into() }, key_at));
                }
                check_name(&text).map_err(at_value)?;
                name = Some(text);
            }
            "fd" => {
                if fd.is_some() {
                    return Err(source.error(FdErrorKind::DuplicateKey { key: key.into() }, key_at));
                }
                fd = Some(parse_number("fd", &text).map_err(at_value)?);
            }
            _ if OPTION_KEYS.contains(&key) => {
                options.set(key, &text).map_err(|kind| match kind {
                    FdErrorKind::DuplicateKey { .. } => source.error(kind, key_at),
                    kind => source.error(kind, value),
                })?;
            }
            _ => {
                return Err(source.error(FdErrorKind::UnknownKey { key: key.into() }, key_at));
            }
        }
    }
    let name = name.ok_or_else(|| source.error(FdErrorKind::MissingKey { key: "name" }, r))?;
    let fd = fd.ok_or_else(|| source.error(FdErrorKind::MissingKey { key: "fd" }, r))?;
    Ok(TableEntry {
        spec: FdSpec { name, fd, options },
        origin: source.span_origin(r.span()),
    })
}

/// A value's text for [`GrantOptions::set`]: strings and symbols as they are, numbers in
/// decimal, booleans as `true`/`false`. Anything else has none.
fn atom_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) | Value::Symbol(s) => Some(s.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds::spec::{Kind, Mode};
    use proptest::prelude::*;

    fn specs(text: &str) -> Vec<FdSpec> {
        parse("t.sexp", text)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| e.spec)
            .collect()
    }

    fn spec(name: &str, fd: i32, options: GrantOptions) -> FdSpec {
        FdSpec {
            name: name.into(),
            fd,
            options,
        }
    }

    #[test]
    fn both_shapes_of_the_seeds_parse_alike() {
        let keywords = r#"(
  (fd :name "stdin"  :fd 0 :mode "r" :target 0)
  (fd :name "stdout" :fd 1 :mode "w" :target 1)
  (fd :name "logs"   :fd 5 :mode "w" :type "file" :target 9)
)"#;
        let lists = r#"(
  (fd (name "stdin")  (fd 0) (mode "r") (target 0))
  (fd (name "stdout") (fd 1) (mode "w") (target 1))
  (fd (name "logs")   (fd 5) (mode "w") (type "file") (target 9))
)"#;
        let want = vec![
            spec(
                "stdin",
                0,
                GrantOptions {
                    mode: Some(Mode::Read),
                    target: Some(0),
                    ..Default::default()
                },
            ),
            spec(
                "stdout",
                1,
                GrantOptions {
                    mode: Some(Mode::Write),
                    target: Some(1),
                    ..Default::default()
                },
            ),
            spec(
                "logs",
                5,
                GrantOptions {
                    mode: Some(Mode::Write),
                    kind: Some(Kind::File),
                    target: Some(9),
                    ..Default::default()
                },
            ),
        ];
        assert_eq!(specs(keywords), want);
        assert_eq!(specs(lists), want);
    }

    #[test]
    fn top_level_forms_mixed_shapes_symbols_booleans_and_comments() {
        let text = "; grants\n(fd :name db :fd 3 (mode rw) :move #t)\n(fd (name \"c-1\") :fd 4 :cloexec false (pathlink \"true\"))\n";
        assert_eq!(
            specs(text),
            vec![
                spec(
                    "db",
                    3,
                    GrantOptions {
                        mode: Some(Mode::ReadWrite),
                        moved: Some(true),
                        ..Default::default()
                    }
                ),
                spec(
                    "c-1",
                    4,
                    GrantOptions {
                        cloexec: Some(false),
                        pathlink: Some(true),
                        ..Default::default()
                    }
                ),
            ]
        );
    }

    #[test]
    fn empty_tables() {
        assert_eq!(specs(""), vec![]);
        assert_eq!(specs("()"), vec![]);
        assert_eq!(specs("  ; nothing\n"), vec![]);
    }

    /// Parses `text` expecting an error; returns the error's variant name, line and column.
    fn error_at(text: &str) -> (String, usize, usize) {
        let e = match parse("t.sexp", text) {
            Ok(entries) => panic!("{text:?} parsed: {entries:?}"),
            Err(e) => e,
        };
        let variant = format!("{:?}", e.kind())
            .split([' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned();
        match e.origin() {
            Origin::Table { line, column, .. } => (variant, *line, *column),
            other => panic!("{text:?}: origin {other:?}"),
        }
    }

    #[test]
    fn errors_point_at_line_and_column() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, usize, usize)] = &[
            // Syntax.
            ("(fd :name \"db\" :fd 3", "TableSyntax", 1, 20),
            // EOF: the last character
            ("(fd :name \"db\" :fd 3))", "TableSyntax", 1, 22),
            ("(fd :name \"db)", "TableSyntax", 1, 14),
            // Shape.
            ("\n  42", "TableShape", 2, 3),
            ("(fd :name \"db\" :fd 3)\n(42)", "TableShape", 2, 2),
            ("((fd :name \"a\" :fd 3) (x))", "TableShape", 1, 23),
            ("(fd :name \"db\" :fd)", "TableShape", 1, 16),
            ("(fd :name \"db\" :fd 3 mode)", "TableShape", 1, 22),
            ("(fd :name \"db\" :fd 3 (mode \"r\" \"w\"))", "TableShape", 1, 22),
            ("(fd :name \"db\" :fd (3))", "TableShape", 1, 20),
            ("(fd :name \"db\" :fd 3 . 4)", "TableShape", 1, 1),
            // Keys and values.
            ("(fd :name \"db\" :fd 3 :colour \"red\")", "UnknownKey", 1, 22),
            ("(fd (name \"db\") (fd 3)\n    (colour \"red\"))", "UnknownKey", 2, 6),
            ("(fd :name \"db\" :fd 3 :mode \"x\")", "BadMode", 1, 28),
            ("(fd :name \"db\" :fd 3 :type \"pipe\")", "BadType", 1, 28),
            ("(fd :name \"db\" :fd 3 :move \"maybe\")", "BadBool", 1, 28),
            ("(fd :name \"db\" :fd 3 :cloexec 1)", "BadBool", 1, 31),
            ("(fd :name \"db\" :fd -3)", "BadNumber", 1, 20),
            ("(fd :name \"db\" :fd 3 :target 1.5)", "BadNumber", 1, 30),
            ("(fd :name \"d b\" :fd 3)", "BadName", 1, 11),
            ("(fd :name \"db\" :fd 3 :mode \"r\" (mode \"w\"))", "DuplicateKey", 1, 33),
            ("(fd :name \"db\" :name \"x\" :fd 3)", "DuplicateKey", 1, 16),
            ("(fd :name \"db\" :fd 3 :fd 4)", "DuplicateKey", 1, 22),
            ("\n\n   (fd :fd 3)", "MissingKey", 3, 4),
            ("(fd :name \"db\")", "MissingKey", 1, 1),
        ];
        let mut wrong = Vec::new();
        for (text, variant, line, column) in cases {
            let got = error_at(text);
            if got != (variant.to_string(), *line, *column) {
                wrong.push(format!("{text:?}: got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn spans_cover_the_value_at_fault() {
        let text = "(fd :name \"db\" :fd 3\n    :mode \"x\")";
        let e = parse("t.sexp", text).unwrap_err();
        let Origin::Table { span, .. } = e.origin() else {
            panic!("{e}");
        };
        assert_eq!(&text[span.offset()..span.offset() + span.len()], "\"x\"");
        assert!(
            e.to_string().starts_with("--fd-from t.sexp:2:11: bad mode"),
            "{e}"
        );
    }

    #[test]
    fn load_reads_files_and_stdin_and_refuses_other_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("caps.sexp");
        std::fs::write(&path, "(fd :name \"db\" :fd 3)").unwrap();
        let value = format!("@{}", path.display());
        let (name, text) = load(&value, &mut std::io::empty()).unwrap();
        assert_eq!(name, path.display().to_string());
        assert_eq!(text, "(fd :name \"db\" :fd 3)");

        let (name, text) = load("-", &mut "(fd :name \"x\" :fd 0)".as_bytes()).unwrap();
        assert_eq!(
            (name.as_str(), text.as_str()),
            ("<stdin>", "(fd :name \"x\" :fd 0)")
        );

        for (value, want) in [
            ("caps.sexp", "FdFromSyntax"),
            ("@", "FdFromSyntax"),
            ("@/nonexistent/caps.sexp", "TableRead"),
        ] {
            let e = load(value, &mut std::io::empty()).unwrap_err();
            assert!(format!("{:?}", e.kind()).starts_with(want), "{value}: {e}");
            assert!(e.to_string().starts_with("--fd-from "), "{e}");
        }
        let e = load("-", &mut [0xff, 0xfe].as_slice()).unwrap_err();
        assert!(matches!(e.kind(), FdErrorKind::TableRead { .. }));
        let big = vec![b' '; MAX_TABLE_BYTES as usize + 1];
        let e = load("-", &mut big.as_slice()).unwrap_err();
        assert!(matches!(e.kind(), FdErrorKind::TableRead { .. }));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,80}") {
            let _ = parse("t", &s);
        }

        #[test]
        fn table_shaped_text_never_panics(s in "[():a-z0-9\" #;.\n-]{0,80}") {
            let _ = parse("t", &s);
        }

        #[test]
        fn tables_round_trip(
            specs in proptest::collection::vec(crate::fds::spec::tests::spec_strategy(), 0..5),
            lists in any::<bool>(),
        ) {
            let shape = if lists { Shape::Lists } else { Shape::Keywords };
            let text = render(&specs, shape);
            let parsed: Vec<FdSpec> = parse("t", &text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?
                .into_iter()
                .map(|e| e.spec)
                .collect();
            prop_assert_eq!(parsed, specs);
        }
    }
}
