//! Reading hand-written TOML with every value's location kept, collecting every
//! problem instead of stopping at the first.
//!
//! serde stops at the first type error; people editing an agreement want the whole
//! list at once. So documents are parsed into toml's spanned tree and walked here.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Diagnostics, LineIndex};

/// Largest document accepted; agreements are pages, not megabytes.
pub const DOCUMENT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Ctx<'t> {
    file: String,
    text: &'t str,
    lines: LineIndex,
    diags: Vec<Diagnostic>,
}

impl<'t> Ctx<'t> {
    pub fn new(file: &str, text: &'t str) -> Self {
        Self {
            file: file.to_owned(),
            text,
            lines: LineIndex::new(text),
            diags: Vec::new(),
        }
    }

    pub fn error(&mut self, span: &Range<usize>, path: &str, message: impl Into<String>) {
        let (line, column) = self.lines.locate(self.text, span.start);
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// The value if it was read without a problem, else every problem found.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, Diagnostics> {
        match value {
            Some(v) if self.diags.is_empty() => Ok(v),
            _ => {
                if self.diags.is_empty() {
                    self.error(&(0..0), "", "document could not be read");
                }
                self.diags.sort_by_key(|a| (a.line, a.column));
                Err(Diagnostics(self.diags))
            }
        }
    }

    /// Parses the whole text, reporting every syntax error toml could recover from.
    pub fn parse(&mut self) -> Option<Spanned<DeTable<'t>>> {
        if self.text.len() > DOCUMENT_BYTES_MAX {
            self.error(
                &(0..0),
                "",
                format!(
                    "document is {} bytes, expected at most {DOCUMENT_BYTES_MAX}",
                    self.text.len()
                ),
            );
            return None;
        }
        if self.text.trim().is_empty() {
            self.error(&(0..0), "", "document is empty, expected an agreement");
            return None;
        }
        let (table, errors) = DeTable::parse_recoverable(self.text);
        for e in &errors {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().trim_end_matches('.').to_owned();
            self.error(&span, "", format!("not valid TOML: {msg}"));
        }
        if errors.is_empty() { Some(table) } else { None }
    }
}

/// Human name of a TOML value's type, for "expected X, found Y".
pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A table being read: tracks which keys were used so unknown ones are reported.
#[derive(Debug)]
pub struct Table<'a, 't> {
    pub path: String,
    pub span: Range<usize>,
    entries: &'a DeTable<'t>,
    used: Vec<String>,
}

/// A located value with its field path.
#[derive(Debug, Clone)]
pub struct Field<'a, 't> {
    pub path: String,
    pub span: Range<usize>,
    pub value: &'a DeValue<'t>,
}

fn join(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key: Cow<'_, str> = if simple {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("\"{key}\""))
    };
    if path.is_empty() {
        key.into_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a, 't> Table<'a, 't> {
    pub fn root(t: &'a Spanned<DeTable<'t>>) -> Self {
        Self {
            path: String::new(),
            span: t.span(),
            entries: t.get_ref(),
            used: Vec::new(),
        }
    }

    fn lookup(&mut self, key: &str) -> Option<&'a Spanned<DeValue<'t>>> {
        let found = self
            .entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v);
        if found.is_some() {
            self.used.push(key.to_owned());
        }
        found
    }

    pub fn field(&mut self, key: &str) -> Option<Field<'a, 't>> {
        let path = join(&self.path, key);
        self.lookup(key).map(|v| Field {
            path,
            span: v.span(),
            value: v.get_ref(),
        })
    }

    pub fn required(&mut self, ctx: &mut Ctx<'_>, key: &str, what: &str) -> Option<Field<'a, 't>> {
        let f = self.field(key);
        if f.is_none() {
            let path = join(&self.path, key);
            ctx.error(&self.span, &path, format!("missing, expected {what}"));
        }
        f
    }

    pub fn str_req(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &str,
        what: &str,
    ) -> Option<(String, Range<usize>)> {
        let f = self.required(ctx, key, what)?;
        f.as_str(ctx, what).map(|s| (s, f.span.clone()))
    }

    pub fn str_opt(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &str,
        what: &str,
    ) -> Option<(String, Range<usize>)> {
        let f = self.field(key)?;
        f.as_str(ctx, what).map(|s| (s, f.span.clone()))
    }

    pub fn bool_opt(&mut self, ctx: &mut Ctx<'_>, key: &str) -> Option<bool> {
        let f = self.field(key)?;
        match f.value {
            DeValue::Boolean(b) => Some(*b),
            other => {
                ctx.error(
                    &f.span,
                    &f.path,
                    format!("found {}, expected `true` or `false`", type_name(other)),
                );
                None
            }
        }
    }

    /// Items of an array of tables (`[[key]]`), or none if the key is absent.
    pub fn tables(&mut self, ctx: &mut Ctx<'_>, key: &str) -> Vec<Table<'a, 't>> {
        let Some(f) = self.field(key) else {
            return Vec::new();
        };
        f.tables(ctx)
    }

    pub fn table(&mut self, ctx: &mut Ctx<'_>, key: &str) -> Option<Table<'a, 't>> {
        let f = self.field(key)?;
        f.table(ctx)
    }

    /// Entries of this table in file order, for maps keyed by the user.
    pub fn entries(&mut self) -> Vec<(String, Field<'a, 't>)> {
        let mut out: Vec<(String, Field<'a, 't>)> = self
            .entries
            .iter()
            .map(|(k, v)| {
                let key = k.get_ref().to_string();
                let field = Field {
                    path: join(&self.path, &key),
                    span: v.span(),
                    value: v.get_ref(),
                };
                (key, field)
            })
            .collect();
        out.sort_by_key(|(_, f)| f.span.start);
        self.used.extend(out.iter().map(|(k, _)| k.clone()));
        out
    }

    /// Reports keys that were never read: a typo must not be silently ignored.
    pub fn finish(self, ctx: &mut Ctx<'_>, expected: &str) {
        let mut unknown: Vec<(&Spanned<Cow<'t, str>>, String)> = self
            .entries
            .iter()
            .filter(|(k, _)| !self.used.iter().any(|u| u == k.get_ref().as_ref()))
            .map(|(k, _)| (k, join(&self.path, k.get_ref())))
            .collect();
        unknown.sort_by_key(|(k, _)| k.span().start);
        for (k, path) in unknown {
            ctx.error(
                &k.span(),
                &path,
                format!("unknown field, expected one of {expected}"),
            );
        }
    }
}

impl<'a, 't> Field<'a, 't> {
    pub fn as_str(&self, ctx: &mut Ctx<'_>, what: &str) -> Option<String> {
        match self.value {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                ctx.error(
                    &self.span,
                    &self.path,
                    format!("found {}, expected {what}", type_name(other)),
                );
                None
            }
        }
    }

    /// A string, or a TOML date-time written bare; both are returned as text.
    pub fn as_str_or_datetime(&self, ctx: &mut Ctx<'_>, what: &str) -> Option<String> {
        match self.value {
            DeValue::Datetime(d) => Some(d.to_string()),
            _ => self.as_str(ctx, what),
        }
    }

    pub fn as_i64(&self, ctx: &mut Ctx<'_>, what: &str) -> Option<i64> {
        match self.value {
            DeValue::Integer(i) => {
                let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
                match i64::from_str_radix(&digits, i.radix()) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        ctx.error(
                            &self.span,
                            &self.path,
                            format!("integer `{}` is out of range, expected {what}", i.as_str()),
                        );
                        None
                    }
                }
            }
            other => {
                ctx.error(
                    &self.span,
                    &self.path,
                    format!("found {}, expected {what}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn table(&self, ctx: &mut Ctx<'_>) -> Option<Table<'a, 't>> {
        match self.value {
            DeValue::Table(t) => Some(Table {
                path: self.path.clone(),
                span: self.span.clone(),
                entries: t,
                used: Vec::new(),
            }),
            other => {
                ctx.error(
                    &self.span,
                    &self.path,
                    format!("found {}, expected a table", type_name(other)),
                );
                None
            }
        }
    }

    /// Elements of an array with their paths `path[i]`.
    pub fn items(&self, ctx: &mut Ctx<'_>, what: &str) -> Vec<Field<'a, 't>> {
        match self.value {
            DeValue::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| Field {
                    path: format!("{}[{i}]", self.path),
                    span: v.span(),
                    value: v.get_ref(),
                })
                .collect(),
            other => {
                ctx.error(
                    &self.span,
                    &self.path,
                    format!("found {}, expected an array of {what}", type_name(other)),
                );
                Vec::new()
            }
        }
    }

    pub fn tables(&self, ctx: &mut Ctx<'_>) -> Vec<Table<'a, 't>> {
        self.items(ctx, "tables")
            .into_iter()
            .filter_map(|f| f.table(ctx))
            .collect()
    }

    pub fn strings(&self, ctx: &mut Ctx<'_>, what: &str) -> Vec<(String, Range<usize>)> {
        self.items(ctx, what)
            .into_iter()
            .filter_map(|f| f.as_str(ctx, what).map(|s| (s, f.span.clone())))
            .collect()
    }
}
