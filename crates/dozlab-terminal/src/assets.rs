//! The page, embedded at build time: xterm.js and its addons bundled by
//! esbuild into `web/dist/` (committed; `scripts/setup.d/10-web.sh`
//! regenerates it), plus the HTML of the terminal and login pages.

/// The terminal page.
pub const INDEX_HTML: &str = include_str!("../web/index.html");
const LOGIN_HTML: &str = include_str!("../web/login.html");
const JS: &[u8] = include_bytes!("../web/dist/terminal.js");
const CSS: &[u8] = include_bytes!("../web/dist/terminal.css");

/// An asset by file name: (content type, bytes).
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    match name {
        "terminal.js" => Some(("text/javascript; charset=utf-8", JS)),
        "terminal.css" => Some(("text/css; charset=utf-8", CSS)),
        _ => None,
    }
}

/// The login page, with an optional error line.
pub fn login_page(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    LOGIN_HTML.replace("<!--ERROR-->", &error)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
