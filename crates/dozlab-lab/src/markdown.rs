//! Lab Markdown → sanitised HTML with clickable actions.
//!
//! Killercoda marks code with a suffix: `` `cmd`{{exec}} `` inline, or a
//! closing fence `` ```{{exec}} `` for a block. `{{exec}}` types the code
//! into the terminal and presses Enter, `{{exec interrupt}}` sends Ctrl-C
//! first, `{{copy}}` copies, a plain inline code span copies on click, and
//! `{{}}` turns copying off. The output marks each action with
//! `data-lab-action` (`exec`, `exec-interrupt`, `copy`) and `data-lab-index`
//! (its position in [`Rendered::actions`], where the page takes the text
//! from: the DOM never carries a command to run).
//!
//! The Markdown is untrusted: the HTML is sanitised with ammonia (no
//! `script`, `style`, event handlers, `javascript:` URLs or forms). The
//! `data-lab-*` attributes survive only when they carry this render's random
//! nonce, so HTML written in the Markdown cannot forge an action. Relative
//! links and images are resolved against the Markdown file's directory and
//! prefixed with the URL the lab's files are served under.

use crate::problem::Problem;
use pulldown_cmark::{
    CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd, TextMergeWithOffset,
};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// What clicking a piece of code does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Type into the terminal and press Enter.
    Exec,
    /// Ctrl-C, then type and press Enter.
    ExecInterrupt,
    /// Copy to the clipboard.
    Copy,
}

impl ActionKind {
    /// The `data-lab-action` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Exec => "exec",
            ActionKind::ExecInterrupt => "exec-interrupt",
            ActionKind::Copy => "copy",
        }
    }

    /// True for the kinds that type into the terminal.
    pub fn is_exec(self) -> bool {
        matches!(self, ActionKind::Exec | ActionKind::ExecInterrupt)
    }
}

/// One clickable piece of code of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// Its `data-lab-index`.
    pub index: usize,
    /// What a click does.
    pub kind: ActionKind,
    /// The code (a block keeps its final newline stripped).
    pub text: String,
    /// A fenced/indented block (true) or an inline code span (false).
    pub block: bool,
    /// 1-based line in the Markdown file.
    pub line: usize,
}

/// A rendered page.
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    /// Sanitised HTML.
    pub html: String,
    /// Every action, in document order.
    pub actions: Vec<Action>,
    /// Lab files the page links or shows (relative to the lab directory):
    /// the only files a server needs to publish for it.
    pub files: Vec<String>,
    /// Problems found (unknown annotations, unclosed fences, links out of the lab).
    #[serde(skip)]
    pub problems: Vec<Problem>,
}

impl Rendered {
    /// The `{{exec}}` / `{{exec interrupt}}` actions in order: what a learner
    /// following the page would run.
    pub fn exec_blocks(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.kind.is_exec())
    }
}

/// How to render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// URL prefix the lab directory is served under (e.g. `/lab/files/`).
    pub files_prefix: String,
    /// The Markdown file's path relative to the lab directory (`step1.md`,
    /// `text/step1.md`): relative links resolve against its directory.
    pub file: String,
}

/// An annotation after a piece of code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Action(ActionKind),
    NoCopy,
}

fn parse_mark(inner: &str) -> Option<Mark> {
    let words: Vec<&str> = inner.split_whitespace().collect();
    match words.as_slice() {
        [] => Some(Mark::NoCopy),
        ["exec"] => Some(Mark::Action(ActionKind::Exec)),
        ["exec", "interrupt"] => Some(Mark::Action(ActionKind::ExecInterrupt)),
        ["copy"] => Some(Mark::Action(ActionKind::Copy)),
        _ => None,
    }
}

/// Annotated closing fences, found before parsing.
struct Fences {
    /// Text with each closing-fence annotation blanked (same byte offsets).
    text: String,
    /// Byte offset of an annotated closing fence line → its annotation.
    marks: BTreeMap<usize, Mark>,
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Finds fenced blocks whose closing fence carries `{{...}}`, blanks the
/// annotation (so CommonMark sees a plain closing fence) and remembers it.
fn scan_fences(src: &str, file: &str, problems: &mut Vec<Problem>) -> Fences {
    let mut text = src.to_string();
    let mut marks = BTreeMap::new();
    let mut open: Option<(char, usize, usize)> = None; // (char, len, line)
    let mut offset = 0;
    for (n, line) in src.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        let body = line.trim_start_matches([' ', '\t', '>']);
        let lead = line.len() - body.len();
        let fc = body.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fc.map_or(0, |c| body.chars().take_while(|x| *x == c).count());
        match (open, fc) {
            (None, Some(c)) if run >= 3 => open = Some((c, run, n + 1)),
            (Some((oc, olen, _)), Some(c)) if c == oc && run >= olen => {
                let rest = body[run..].trim_end();
                if rest.is_empty() {
                    open = None;
                } else if let Some(inner) =
                    rest.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
                {
                    open = None;
                    match parse_mark(inner) {
                        Some(m) => {
                            marks.insert(start, m);
                        }
                        None => problems.push(
                            Problem::warning(file, format!("unknown action {rest:?} (use {{{{exec}}}}, {{{{exec interrupt}}}}, {{{{copy}}}} or {{{{}}}})"))
                                .at(Some(n + 1)),
                        ),
                    }
                    let from = start + lead + run;
                    let to = from + rest.len();
                    text.replace_range(from..to, &" ".repeat(to - from));
                }
            }
            _ => {}
        }
    }
    if let Some((c, len, line)) = open {
        let fence: String = std::iter::repeat_n(c, len).collect();
        problems.push(
            Problem::error(file, format!("code block opened with {fence} is never closed (its actions would swallow the rest of the page)"))
                .at(Some(line)),
        );
    }
    Fences { text, marks }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct Renderer<'a> {
    nonce: String,
    file: &'a str,
    text: &'a str,
    actions: Vec<Action>,
    problems: Vec<Problem>,
}

impl Renderer<'_> {
    fn attrs(&mut self, kind: ActionKind, code: &str, block: bool, offset: usize) -> String {
        let index = self.actions.len();
        self.actions.push(Action {
            index,
            kind,
            text: code.to_string(),
            block,
            line: line_at(self.text, offset),
        });
        format!(
            " data-lab-action=\"{n}:{k}\" data-lab-index=\"{n}:{index}\"",
            n = self.nonce,
            k = kind.as_str()
        )
    }

    fn block(
        &mut self,
        code: &str,
        lang: Option<&str>,
        mark: Option<Mark>,
        offset: usize,
    ) -> String {
        let code = code.strip_suffix('\n').unwrap_or(code);
        let attrs = match mark {
            Some(Mark::Action(k)) => self.attrs(k, code, true, offset),
            _ => String::new(),
        };
        let lang = lang
            .filter(|l| !l.is_empty())
            .map(|l| format!(" data-lab-lang=\"{}:{}\"", self.nonce, escape(l)))
            .unwrap_or_default();
        format!("<pre{attrs}{lang}><code>{}</code></pre>\n", escape(code))
    }

    fn inline(&mut self, code: &str, mark: Option<Mark>, offset: usize) -> String {
        let attrs = match mark {
            Some(Mark::Action(k)) => self.attrs(k, code, false, offset),
            Some(Mark::NoCopy) => String::new(),
            None => self.attrs(ActionKind::Copy, code, false, offset),
        };
        format!("<code{attrs}>{}</code>", escape(code))
    }

    /// The events with code turned into our markup.
    fn transform<'e>(
        &mut self,
        events: Vec<(Event<'e>, Range<usize>)>,
        fences: &Fences,
    ) -> Vec<Event<'e>> {
        let mut out = Vec::with_capacity(events.len());
        let mut it = events.into_iter().peekable();
        while let Some((ev, range)) = it.next() {
            match ev {
                Event::Start(Tag::CodeBlock(kind)) => {
                    let mut code = String::new();
                    for (inner, _) in it.by_ref() {
                        match inner {
                            Event::Text(t) => code.push_str(&t),
                            Event::End(TagEnd::CodeBlock) => break,
                            _ => {}
                        }
                    }
                    let lang = match &kind {
                        CodeBlockKind::Fenced(info) => {
                            info.split_whitespace().next().map(str::to_string)
                        }
                        CodeBlockKind::Indented => None,
                    };
                    let mark = fences.marks.range(range.clone()).next().map(|(_, m)| *m);
                    out.push(Event::Html(
                        self.block(&code, lang.as_deref(), mark, range.start).into(),
                    ));
                }
                Event::Code(code) => {
                    let mut mark = None;
                    if let Some((Event::Text(next), _)) = it.peek_mut()
                        && let Some((m, rest)) = self.inline_mark(next, range.end)
                    {
                        mark = Some(m);
                        *next = CowStr::from(rest);
                    }
                    out.push(Event::InlineHtml(
                        self.inline(&code, mark, range.start).into(),
                    ));
                }
                other => out.push(other),
            }
        }
        out
    }

    fn inline_mark(&mut self, next: &str, offset: usize) -> Option<(Mark, String)> {
        let rest = next.strip_prefix("{{")?;
        let end = rest.find("}}")?;
        let inner = &rest[..end];
        match parse_mark(inner) {
            Some(m) => Some((m, rest[end + 2..].to_string())),
            None => {
                self.problems.push(
                    Problem::warning(self.file, format!("unknown action {{{{{inner}}}}} (use {{{{exec}}}}, {{{{exec interrupt}}}}, {{{{copy}}}} or {{{{}}}})"))
                        .at(Some(line_at(self.text, offset))),
                );
                None
            }
        }
    }
}

/// Renders one page.
pub fn render(markdown: &str, opts: &RenderOptions) -> Rendered {
    let mut problems = Vec::new();
    let fences = scan_fences(markdown, &opts.file, &mut problems);
    let nonce = format!("{:016x}", rand::random::<u64>());
    let mut r = Renderer {
        nonce: nonce.clone(),
        file: &opts.file,
        text: &fences.text,
        actions: Vec::new(),
        problems,
    };
    let parser = Parser::new_ext(
        &fences.text,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS,
    );
    let events: Vec<_> = TextMergeWithOffset::new(parser.into_offset_iter()).collect();
    let events = r.transform(events, &fences);
    let mut raw = String::new();
    pulldown_cmark::html::push_html(&mut raw, events.into_iter());
    let links = Arc::new(Mutex::new(Links::default()));
    let html = sanitize(&raw, &nonce, opts, links.clone());
    let links = std::mem::take(&mut *links.lock().expect("lock"));
    for bad in links.outside {
        r.problems.push(Problem::warning(
            &opts.file,
            format!("link {bad:?} leaves the lab directory: removed"),
        ));
    }
    Rendered {
        html,
        actions: r.actions,
        files: links.files.into_iter().collect(),
        problems: r.problems,
    }
}

#[derive(Debug, Default)]
struct Links {
    files: BTreeSet<String>,
    outside: Vec<String>,
}

/// Cleans `raw` HTML: ammonia's safe defaults, plus our nonce-checked
/// `data-lab-*` attributes on `pre` and `code`.
fn sanitize(raw: &str, nonce: &str, opts: &RenderOptions, links: Arc<Mutex<Links>>) -> String {
    let lab_attrs: HashSet<&str> = ["data-lab-action", "data-lab-index", "data-lab-lang"].into();
    let prefix = format!("{nonce}:");
    let base_dir = match opts.file.rfind('/') {
        Some(i) => opts.file[..i].to_string(),
        None => String::new(),
    };
    let files_prefix = opts.files_prefix.clone();
    let mut b = ammonia::Builder::default();
    b.add_tag_attributes("pre", lab_attrs.iter().copied())
        .add_tag_attributes("code", lab_attrs.iter().copied())
        .attribute_filter(move |_el, attr, value| {
            if attr.starts_with("data-lab-") {
                value
                    .strip_prefix(prefix.as_str())
                    .map(|v| Cow::Owned(v.to_string()))
            } else {
                Some(Cow::Borrowed(value))
            }
        })
        .url_relative(ammonia::UrlRelative::Custom(Box::new(Resolver {
            base_dir,
            files_prefix,
            links,
        })));
    b.clean(raw).to_string()
}

/// Resolves the page's relative URLs (see [`resolve`]).
struct Resolver {
    base_dir: String,
    files_prefix: String,
    links: Arc<Mutex<Links>>,
}

impl<'a> ammonia::UrlRelativeEvaluate<'a> for Resolver {
    fn evaluate<'url>(&self, url: &'url str) -> Option<Cow<'url, str>> {
        resolve(url, &self.base_dir, &self.files_prefix, &self.links)
    }
}

/// A relative URL of the page → the served URL of the lab file it names.
fn resolve<'u>(
    url: &'u str,
    base_dir: &str,
    prefix: &str,
    links: &Mutex<Links>,
) -> Option<Cow<'u, str>> {
    if url.starts_with('#') {
        return Some(Cow::Borrowed(url));
    }
    if url.starts_with('/') || url.starts_with("//") {
        // Absolute paths on the terminal's own origin could reach its API.
        links.lock().expect("lock").outside.push(url.to_string());
        return None;
    }
    let (path, suffix) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let mut parts: Vec<&str> = base_dir.split('/').filter(|p| !p.is_empty()).collect();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    links.lock().expect("lock").outside.push(url.to_string());
                    return None;
                }
            }
            s => parts.push(s),
        }
    }
    let rel = parts.join("/");
    links
        .lock()
        .expect("lock")
        .files
        .insert(percent_decode(&rel));
    Some(Cow::Owned(format!("{prefix}{rel}{suffix}")))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
