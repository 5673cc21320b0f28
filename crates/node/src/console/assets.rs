//! The console's static files, compiled into the binary (no files to install next to it).
//! The page loads nothing from elsewhere: its content security policy allows only this
//! node's own script, style and API.

use bitmountain_metrics::Page;
use http::header;

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                      base-uri 'none'; form-action 'none'";

/// The static file at `path`, if it is one.
pub fn page(path: &str) -> Option<Page> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "/console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
        _ => return None,
    };
    Some(
        Page::ok(content_type, body)
            .with_header(header::CONTENT_SECURITY_POLICY, POLICY)
            .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .with_header(header::REFERRER_POLICY, "no-referrer")
            .with_header(header::CACHE_CONTROL, "no-cache"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn serves_the_three_files_and_nothing_else() {
        for p in ["/", "/index.html", "/console.js", "/console.css"] {
            let page = page(p).expect(p);
            assert!(!page.body.is_empty());
        }
        assert!(page("/api/console").is_none());
        assert!(page("/../Cargo.toml").is_none());
        // The page names only its own files.
        assert!(INDEX_HTML.contains("src=\"console.js\""));
        assert!(!INDEX_HTML.contains("http"), "no external resources");
    }
}
