//! The admin page under `/ui/`: three files embedded in the binary (no install, nothing from another host),
//! served with a strict Content-Security-Policy. The page holds no data: it reads and writes through the
//! documented HTTP routes with the user's bearer token, so its files are served without one.
//!
//! The policy allows scripts, styles and fetches from this origin only, and no inline script or style;
//! the page renders every value with `textContent`, so a stored `<script>` is shown, never run.

/// The page's Content-Security-Policy: same-origin scripts, styles and fetches; nothing inline; images
/// only from the origin or `data:` (the page has none but an empty favicon); no framing, forms or `<base>`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The policy as a header.
pub const CSP_HEADER: (&str, &str) = ("Content-Security-Policy", CSP);

/// Headers of every `/ui/` response: the policy, no content sniffing, no framing (for browsers older than
/// `frame-ancestors`), no referrer, and revalidation so that an upgraded server's page is the one loaded.
pub const HEADERS: [(&str, &str); 5] = [
    CSP_HEADER,
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
];

/// An embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct File {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// What a path under `/ui` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// One of the page's files.
    File(File),
    /// `/ui` without its slash: the page is at `/ui/` (its files' relative paths need the slash).
    Redirect(&'static str),
    /// Nothing.
    Missing,
}

/// The page.
pub const INDEX_HTML: &str = include_str!("ui/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("ui/app.js");
/// Its style sheet.
pub const APP_CSS: &str = include_str!("ui/app.css");

/// True for the paths the admin page owns: `/ui` and everything under `/ui/`.
pub fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The file a path under `/ui` names.
pub fn find(path: &str) -> Found {
    let file = |content_type, body: &'static str| Found::File(File { content_type, body: body.as_bytes() });
    match path {
        "/ui" => Found::Redirect("/ui/"),
        "/ui/" | "/ui/index.html" => file("text/html; charset=utf-8", INDEX_HTML),
        "/ui/app.js" => file("text/javascript; charset=utf-8", APP_JS),
        "/ui/app.css" => file("text/css; charset=utf-8", APP_CSS),
        _ => Found::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(is_ui("/ui") && is_ui("/ui/") && is_ui("/ui/app.js"));
        assert!(!is_ui("/uix") && !is_ui("/u") && !is_ui("/bank/ui"));
        assert_eq!(find("/ui"), Found::Redirect("/ui/"));
        assert!(matches!(find("/ui/"), Found::File(File { content_type: "text/html; charset=utf-8", .. })));
        assert!(matches!(find("/ui/app.js"), Found::File(f) if f.body == APP_JS.as_bytes()));
        assert_eq!(find("/ui/../stats"), Found::Missing);
        assert_eq!(find("/ui/app.js.map"), Found::Missing);
    }

    /// The page has no inline script, no inline style and no event-handler attribute, which the policy
    /// would block anyway: whatever the page does is in `app.js`.
    #[test]
    fn the_page_has_nothing_inline() {
        let html = INDEX_HTML.to_ascii_lowercase();
        for (at, _) in html.match_indices("<script") {
            let tag = &html[at..at + html[at..].find('>').expect("a closed tag")];
            assert!(tag.contains(" src="), "an inline script: {tag}");
            assert!(html[at..].starts_with(&format!("{tag}></script>")), "a script with a body: {tag}");
        }
        assert!(!html.contains("<style"), "an inline style sheet");
        assert!(!html.contains("style="), "an inline style attribute");
        assert!(!html.contains("javascript:"), "a javascript: URL");
        // An attribute ` on…=` is an event handler.
        let mut rest = html.as_str();
        while let Some(at) = rest.find(" on") {
            let name: String =
                rest[at + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            let after = &rest[at + 1 + name.len()..];
            assert!(!(name.len() > 2 && after.trim_start().starts_with('=')), "an event handler: {name}");
            rest = &rest[at + 3..];
        }
        // Nothing is loaded from another host.
        for needle in ["http://", "https://", "//cdn", "src=\"//", "href=\"//"] {
            assert!(!html.contains(needle), "a reference to another host: {needle}");
        }
        assert!(html.contains("<script src=\"app.js\"></script>"));
        assert!(html.contains("href=\"app.css\""));
    }

    /// The script never writes HTML: values go in as text.
    #[test]
    fn the_script_writes_no_html() {
        for sink in
            ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]
        {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
        for needle in ["http://", "https://"] {
            assert!(!APP_JS.contains(needle) && !APP_CSS.contains(needle), "a reference to another host");
        }
    }

    #[test]
    fn headers_carry_the_policy() {
        assert!(HEADERS.contains(&("Content-Security-Policy", CSP)));
        assert!(HEADERS.contains(&("X-Content-Type-Options", "nosniff")));
        assert!(CSP.contains("script-src 'self';") && !CSP.contains("unsafe"));
    }
}
