//! The browser console and the JavaScript client, embedded in the binary
//! with `include_str!`: the page (`GET /`), its script and style
//! (`/console.js`, `/console.css`, `/favicon.svg`) and the client module
//! (`/pubsub.js`),
//! with the headers they are served with (content type, no sniffing, and
//! the page's Content-Security-Policy).
//!
//! Owns only these files and their headers. It must not read or expose any
//! broker state: the page learns everything through the REST API and `/ws`,
//! like any other client, with the user's API key; the files themselves
//! need no key (see `http::routes`). Nothing here is fetched from outside
//! the broker, and there is no build step: the files are served as written.

/// The page's Content-Security-Policy: scripts, styles and connections
/// (REST and the WebSocket) from the broker itself only; no inline script
/// or style, no plugins, no framing, no forms posting elsewhere. With it, a
/// topic name or payload that slipped into the page as HTML could still run
/// nothing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file the console serves, by path.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_str!("index.html"),
    },
    Asset {
        path: "/console.js",
        content_type: JAVASCRIPT,
        body: include_str!("console.js"),
    },
    Asset {
        path: "/console.css",
        content_type: CSS,
        body: include_str!("console.css"),
    },
    Asset {
        path: "/pubsub.js",
        content_type: JAVASCRIPT,
        body: include_str!("pubsub.js"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: SVG,
        body: include_str!("favicon.svg"),
    },
];

/// The file served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// Every file's headers. Browsers revalidate (`no-cache`) so that a new
/// broker's console is never mixed with an old one's script.
const EVERY_FILE: [(&str, &str); 2] = [
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
];

impl Asset {
    /// The headers the file is served with.
    pub fn headers(&self) -> Vec<(&'static str, &'static str)> {
        let mut headers = EVERY_FILE.to_vec();
        match self.path {
            "/" => headers.extend([
                ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
                ("Referrer-Policy", "no-referrer"),
                ("X-Frame-Options", "DENY"),
            ]),
            // A page of another origin may import the client (modules are
            // fetched with CORS); it holds no data.
            "/pubsub.js" => headers.push(("Access-Control-Allow-Origin", "*")),
            _ => {}
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type() {
        for (path, content_type) in [
            ("/", HTML),
            ("/console.js", JAVASCRIPT),
            ("/console.css", CSS),
            ("/pubsub.js", JAVASCRIPT),
            ("/favicon.svg", SVG),
        ] {
            let asset = asset(path).unwrap();
            assert_eq!(asset.content_type, content_type);
            assert!(!asset.body.is_empty(), "{path}");
            assert!(asset
                .headers()
                .contains(&("X-Content-Type-Options", "nosniff")));
        }
        assert_eq!(asset("/index.html"), None);
        assert_eq!(asset("/console.js/"), None);
    }

    #[test]
    fn only_the_client_may_be_imported_from_other_origins() {
        let cors = |path| {
            asset(path)
                .unwrap()
                .headers()
                .contains(&("Access-Control-Allow-Origin", "*"))
        };
        assert!(cors("/pubsub.js"));
        assert!(!cors("/") && !cors("/console.js"));
    }

    #[test]
    fn only_the_page_carries_the_policy() {
        let csp = |path| {
            asset(path)
                .unwrap()
                .headers()
                .iter()
                .any(|(name, _)| *name == "Content-Security-Policy")
        };
        assert!(csp("/"));
        assert!(!csp("/pubsub.js"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    /// The page has no inline script or style (the policy would block
    /// them), and the scripts never parse text as HTML: every topic name
    /// and payload goes into the page with `textContent`.
    #[test]
    fn nothing_is_inline_and_nothing_is_parsed_as_html() {
        let page = asset("/").unwrap().body;
        for tag in page.match_indices("<script").map(|(at, _)| &page[at..]) {
            let tag = &tag[..tag.find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: {tag}");
        }
        assert!(!page.contains("<style"), "inline style element");
        assert!(!page.contains(" style="), "inline style attribute");
        let handler = page.match_indices(" on").find(|(at, _)| {
            let name = &page[at + 3..];
            let letters = name.bytes().take_while(u8::is_ascii_lowercase).count();
            letters > 0 && name[letters..].starts_with('=')
        });
        assert_eq!(handler, None, "inline event handler");
        for path in ["/console.js", "/pubsub.js"] {
            let script = asset(path).unwrap().body;
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!script.contains(sink), "{path} uses {sink}");
            }
        }
    }
}
