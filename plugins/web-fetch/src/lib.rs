//! # kata-web-fetch: a web page as readable text, for the agent
//!
//! A tools plugin (world `tools-plugin` of `kata:plugin@0.1.2`) with one
//! tool, `fetch {url, max_chars?}`: a GET through standard `wasi:http`, so
//! kata checks every request — redirects included — against the plugin's
//! `network` grant before a byte leaves. Its manifest asks for `"*"`: no
//! host of its own, exactly what kata.toml grants:
//!
//! ```toml
//! [plugins.web-fetch]
//! path = "…/web-fetch.wasm"
//! network = ["https://en.wikipedia.org/wiki/", "https://docs.rs/"]
//! ```
//!
//! What comes back: `URL:` (after redirects), `Title:` for HTML, then the
//! text. HTML becomes readable text ([`html_to_text`]): scripts, styles and
//! other non-content elements are dropped, tags stripped, entities decoded,
//! whitespace collapsed, headings and list items kept as Markdown-ish lines,
//! and links kept as `text (URL)`. Other text (`text/*`, JSON, XML) is passed
//! through; anything else is refused with its content type. The download
//! stops at `max_bytes` (config, default 2 MiB) and the text at `max_chars`
//! (argument or config, default 20 000), saying where it was cut.
//!
//! Errors say what to do: a URL outside the grant names the kata.toml line
//! to add; a server error names the status.

use std::fmt::Write as _;

use serde_json::Value;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/v0.1.2", world: "kata:plugin/tools-plugin" });
}

use bindings::exports::kata::plugin::tools::{Guest, ToolError, ToolSpec};

/// Default most characters returned.
pub const MAX_CHARS: usize = 20_000;
/// Default most bytes downloaded.
pub const MAX_BYTES: usize = 2 << 20;
/// Redirects followed.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
const MAX_REDIRECTS: usize = 5;
/// Elements whose content is never text for a reader.
const SKIPPED: [&str; 8] = ["script", "style", "noscript", "template", "svg", "iframe", "object", "canvas"];
/// Elements that start a new line.
const BLOCKS: [&str; 31] = [
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "main",
    "aside",
    "blockquote",
    "pre",
    "hr",
    "dd",
    "dt",
    "dl",
    "figure",
    "figcaption",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "td",
];

/// A parsed http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// `/path?query` (the fragment dropped).
    pub path: String,
}

impl Url {
    /// Parse an absolute http(s) URL.
    pub fn parse(s: &str) -> Result<Url, String> {
        let s = s.trim();
        let (scheme, rest) =
            s.split_once("://").ok_or_else(|| format!("{s:?} is not an absolute URL (e.g. \"https://example.org/page\")"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("{s:?}: only http:// and https:// URLs can be fetched"));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
            return Err(format!("{s:?} has no valid host (user:password@ is not supported)"));
        }
        Ok(Url { scheme, authority: authority.to_string(), path: path.replace(' ', "%20") })
    }

    /// `href` (absolute, scheme-relative, absolute-path or relative) against this URL.
    pub fn join(&self, href: &str) -> Option<Url> {
        let href = href.trim();
        if href.is_empty() || href.starts_with('#') {
            return None;
        }
        if let Some((scheme, _)) = href.split_once(':')
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
            && !scheme.is_empty()
        {
            // Absolute: only web URLs are worth showing.
            return Url::parse(href).ok();
        }
        if let Some(rest) = href.strip_prefix("//") {
            return Url::parse(&format!("{}://{rest}", self.scheme)).ok();
        }
        let path = if href.starts_with('/') {
            href.to_string()
        } else if href.starts_with('?') {
            format!("{}{href}", self.path.split('?').next().unwrap_or("/"))
        } else {
            let dir = self.path.split('?').next().unwrap_or("/");
            let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{href}")
        };
        Url::parse(&format!("{}://{}{}", self.scheme, self.authority, normalize_dots(&path))).ok()
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)
    }
}

/// Resolve `.` and `..` segments of an absolute path (query kept).
fn normalize_dots(path: &str) -> String {
    let (p, q) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = p.split('/').skip(1).collect();
    for (i, s) in segs.iter().enumerate() {
        match *s {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        if i + 1 == segs.len() && (*s == "." || *s == "..") {
            out.push("");
        }
    }
    let mut r = format!("/{}", out.join("/"));
    if let Some(q) = q {
        r.push('?');
        r.push_str(q);
    }
    r
}

/// What a response body is, by its content type (or a look at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTML, to be turned into text.
    Html,
    /// Text passed through.
    Text,
    /// Not text: refused.
    Binary,
}

/// Decide what a body is from its content type, sniffing when there is none.
pub fn kind_of(content_type: Option<&str>, body: &[u8]) -> Kind {
    let ct = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if ct == "text/html" || ct == "application/xhtml+xml" {
        return Kind::Html;
    }
    if ct.starts_with("text/")
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
        || matches!(ct.as_str(), "application/json" | "application/xml" | "application/javascript" | "application/x-ndjson")
    {
        return Kind::Text;
    }
    if !ct.is_empty() && ct != "application/octet-stream" {
        return Kind::Binary;
    }
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    if head.trim_start().starts_with("<!doctype html") || head.contains("<html") {
        Kind::Html
    } else if std::str::from_utf8(&body[..body.len().min(4096)]).is_ok() || body.len() > 4096 && !body[..4096].contains(&0) {
        Kind::Text
    } else {
        Kind::Binary
    }
}

/// An HTML page as readable text: its title (if any) and its text.
pub fn html_to_text(html: &str, base: &Url) -> (Option<String>, String) {
    let mut out = String::new();
    let mut title: Option<String> = None;
    let mut in_title = false;
    let mut skip: Option<String> = None;
    let mut pre = 0usize;
    // Links open: (href, where their text starts in `out`).
    let mut links: Vec<(Option<Url>, usize)> = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            text(&mut out, rest, pre > 0, skip.is_some(), in_title, &mut title);
            break;
        };
        text(&mut out, &rest[..lt], pre > 0, skip.is_some(), in_title, &mut title);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |i| &after[i + 3..]);
            continue;
        }
        let Some(gt) = tag_end(rest) else {
            // A lone '<' is text.
            text(&mut out, "<", pre > 0, skip.is_some(), in_title, &mut title);
            rest = &rest[1..];
            continue;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let body = tag.trim_start_matches('/');
        let name: String = body.chars().take_while(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
        if name.is_empty() {
            continue; // <!DOCTYPE>, <?xml?> and the like
        }
        if let Some(s) = &skip {
            if closing && *s == name {
                skip = None;
            }
            continue;
        }
        if name == "title" {
            in_title = !closing;
            continue;
        }
        if !closing && SKIPPED.contains(&name.as_str()) && !body.trim_end().ends_with('/') {
            skip = Some(name);
            continue;
        }
        match (name.as_str(), closing) {
            ("pre", false) => pre += 1,
            ("pre", true) => pre = pre.saturating_sub(1),
            _ => {}
        }
        if BLOCKS.contains(&name.as_str()) {
            newline(&mut out, matches!(name.as_str(), "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "blockquote" | "pre"));
            if !closing {
                match name.as_str() {
                    "li" => out.push_str("- "),
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                        let level = name[1..].parse::<usize>().unwrap_or(1);
                        out.push_str(&"#".repeat(level));
                        out.push(' ');
                    }
                    "hr" => out.push_str("---\n"),
                    _ => {}
                }
            }
        } else if name == "a" && !closing {
            let href = attribute(body, "href").and_then(|h| base.join(&decode_entities(&h)));
            links.push((href, out.len()));
        } else if name == "a" {
            if let Some((Some(href), start)) = links.pop() {
                let label = out[start.min(out.len())..].trim().to_string();
                let href = href.to_string();
                if !label.is_empty() && label != href {
                    if !out.ends_with(' ') {
                        out.push(' ');
                    }
                    let _ = write!(out, "({href})");
                } else if label.is_empty() {
                    out.push_str(&href);
                }
            }
        } else if name == "img" && !closing {
            if let Some(alt) = attribute(body, "alt").map(|a| decode_entities(&a)).filter(|a| !a.trim().is_empty()) {
                text(&mut out, &format!(" [image: {}] ", alt.trim()), false, false, false, &mut title);
            }
        } else if matches!(name.as_str(), "td" | "th") {
            out.push(' ');
        }
    }
    (title.map(|t| collapse(&t)).filter(|t| !t.is_empty()), tidy(&out))
}

/// Where the tag starting at `s[0] == '<'` ends (its `>`), quotes respected.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '>') => return Some(i),
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '<') if i == 1 => return None,
            _ => {}
        }
    }
    None
}

/// The value of attribute `name` in a tag's text (`a href="x" class=y`).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at > 0 && lower.as_bytes()[at - 1].is_ascii_whitespace();
        let after = lower[from..].trim_start();
        if !before_ok || !after.starts_with('=') {
            continue;
        }
        let value = tag[tag.len() - after.len() + 1..].trim_start();
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or_default().to_string(),
            _ => value.split(|c: char| c.is_whitespace() || c == '>').next().unwrap_or_default().trim_end_matches('/').to_string(),
        });
    }
    None
}

/// Add text (entities decoded; whitespace collapsed outside `<pre>`).
fn text(out: &mut String, raw: &str, pre: bool, skip: bool, in_title: bool, title: &mut Option<String>) {
    if skip || raw.is_empty() {
        return;
    }
    let t = decode_entities(raw);
    if in_title {
        title.get_or_insert_with(String::new).push_str(&t);
        return;
    }
    if pre {
        out.push_str(&t);
        return;
    }
    let mut space = t.starts_with(char::is_whitespace);
    for word in t.split_whitespace() {
        if space && !out.is_empty() && !out.ends_with([' ', '\n']) {
            out.push(' ');
        }
        out.push_str(word);
        space = true;
    }
    if t.ends_with(char::is_whitespace) && !out.is_empty() && !out.ends_with([' ', '\n']) {
        out.push(' ');
    }
}

/// End the current line (`blank`: leave an empty line too).
fn newline(out: &mut String, blank: bool) {
    while out.ends_with(' ') {
        out.pop();
    }
    if out.is_empty() {
        return;
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    if blank && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Trim every line and keep at most one empty line in a row.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.lines() {
        let line = line.trim_end();
        let line = if line.trim().is_empty() { "" } else { line };
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decode the HTML entities that matter for reading.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '#')).map(|e| e + 1);
        let (name, len) = match end {
            Some(e) if rest[e..].starts_with(';') => (&rest[1..e], e + 1),
            Some(e) => (&rest[1..e], e),
            None => (&rest[1..], rest.len()),
        };
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            "mdash" => Some('—'),
            "ndash" => Some('–'),
            "hellip" => Some('…'),
            "copy" => Some('©'),
            "reg" => Some('®'),
            "trade" => Some('™'),
            "lsquo" => Some('‘'),
            "rsquo" => Some('’'),
            "ldquo" => Some('“'),
            "rdquo" => Some('”'),
            "laquo" => Some('«'),
            "raquo" => Some('»'),
            "middot" => Some('·'),
            "bull" => Some('•'),
            "euro" => Some('€'),
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16).ok().and_then(char::from_u32),
            n if n.starts_with('#') => n[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) if len > 1 => {
                out.push(c);
                rest = &rest[len..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` cut to `max` characters, saying so.
pub fn cut(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max).collect();
    let _ = write!(s, "\n\n[… cut at {max} of {total} characters; ask with a larger max_chars, or fetch a more specific page]");
    s
}

/// One HTTP response as the tool needs it.
pub struct Page {
    /// The status code.
    pub status: u16,
    /// The `content-type` header.
    pub content_type: Option<String>,
    /// The `location` header.
    pub location: Option<String>,
    /// The body, at most `max_bytes`.
    pub body: Vec<u8>,
    /// Whether the body was longer than that.
    pub truncated: bool,
}

/// The tool's result for a page (after redirects) at `url`.
pub fn render(url: &Url, page: &Page, max_chars: usize) -> Result<String, ToolError> {
    if !(200..300).contains(&page.status) {
        return Err(ToolError::Failed(format!("{url} answered HTTP {}; nothing to read there", page.status)));
    }
    let mut out = format!("URL: {url}\n");
    let text = match kind_of(page.content_type.as_deref(), &page.body) {
        Kind::Binary => {
            return Err(ToolError::Failed(format!(
                "{url} is not text (content type {}); web-fetch only reads pages and text",
                page.content_type.as_deref().unwrap_or("unknown")
            )));
        }
        Kind::Html => {
            let (title, text) = html_to_text(&String::from_utf8_lossy(&page.body), url);
            if let Some(t) = title {
                let _ = writeln!(out, "Title: {t}");
            }
            text
        }
        Kind::Text => String::from_utf8_lossy(&page.body).trim().to_string(),
    };
    out.push('\n');
    out.push_str(&cut(&text, max_chars));
    if page.truncated {
        let _ = write!(out, "\n\n[… the download stopped at {} bytes (config max_bytes)]", page.body.len());
    }
    Ok(out)
}

/// GET `url`, following redirects, and render it.
#[cfg(target_family = "wasm")]
fn fetch(url: &str, max_chars: usize, max_bytes: usize, user_agent: &str) -> Result<String, ToolError> {
    let mut url = Url::parse(url).map_err(ToolError::InvalidArgs)?;
    for _ in 0..=MAX_REDIRECTS {
        let page = http::get(&url, max_bytes, user_agent)?;
        if matches!(page.status, 301 | 302 | 303 | 307 | 308) {
            let next = page.location.as_deref().and_then(|l| url.join(l));
            match next {
                Some(n) => {
                    url = n;
                    continue;
                }
                None => return Err(ToolError::Failed(format!("{url} redirects (HTTP {}) without a usable Location", page.status))),
            }
        }
        return render(&url, &page, max_chars);
    }
    Err(ToolError::Failed(format!("{url}: more than {MAX_REDIRECTS} redirects; fetch the final address directly")))
}

#[cfg(not(target_family = "wasm"))]
fn fetch(_url: &str, _max_chars: usize, _max_bytes: usize, _user_agent: &str) -> Result<String, ToolError> {
    Err(ToolError::Failed("fetching needs the kata host (this is a native build)".into()))
}

/// The blocking GET over `wasi:http`.
#[cfg(target_family = "wasm")]
mod http {
    use super::{Page, ToolError, Url};
    use wasi::http::outgoing_handler;
    use wasi::http::types::{ErrorCode, Fields, OutgoingBody, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    pub fn get(url: &Url, max_bytes: usize, user_agent: &str) -> Result<Page, ToolError> {
        let failed = |m: String| ToolError::Failed(m);
        let headers = Fields::from_list(&[
            ("user-agent".to_string(), user_agent.as_bytes().to_vec()),
            ("accept".to_string(), b"text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5".to_vec()),
        ])
        .map_err(|e| failed(format!("invalid header: {e:?}")))?;
        let req = OutgoingRequest::new(headers);
        let scheme = if url.scheme == "https" { Scheme::Https } else { Scheme::Http };
        req.set_scheme(Some(&scheme)).map_err(|()| failed(format!("{url}: bad scheme")))?;
        req.set_authority(Some(&url.authority)).map_err(|()| failed(format!("{url}: bad host")))?;
        req.set_path_with_query(Some(&url.path)).map_err(|()| failed(format!("{url}: bad path")))?;
        let body = req.body().map_err(|()| failed("no request body".into()))?;
        let future = outgoing_handler::handle(req, None).map_err(|c| describe(&c, url))?;
        let _ = OutgoingBody::finish(body, None);
        future.subscribe().block();
        let resp = match future.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(code))) => return Err(describe(&code, url)),
            _ => return Err(failed(format!("{url}: no response"))),
        };
        let header = |name: &str| resp.headers().get(&name.to_string()).first().map(|v| String::from_utf8_lossy(v).into_owned());
        let (content_type, location) = (header("content-type"), header("location"));
        let status = resp.status();
        let incoming = resp.consume().map_err(|()| failed(format!("{url}: no response body")))?;
        let stream = incoming.stream().map_err(|()| failed(format!("{url}: no response body")))?;
        let (mut body, mut truncated) = (Vec::new(), false);
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    body.extend(chunk);
                    if body.len() > max_bytes {
                        body.truncate(max_bytes);
                        truncated = true;
                        break;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(failed(format!("{url}: the download broke off: {}", e.to_debug_string())));
                }
            }
        }
        Ok(Page { status, content_type, location, body, truncated })
    }

    /// A wasi:http error as one sentence with what to do.
    fn describe(code: &ErrorCode, url: &Url) -> ToolError {
        let origin = format!("{}://{}", url.scheme, url.authority);
        ToolError::Failed(match code {
            ErrorCode::HttpRequestDenied => format!(
                "kata's policy does not let this plugin fetch {url}: it may only reach the `network` entries of its \
                 [plugins.NAME] table in kata.toml; to allow this site add \"{origin}/\" there (`kata audit` shows the refusal)"
            ),
            ErrorCode::DnsError(_) | ErrorCode::DnsTimeout | ErrorCode::DestinationNotFound => {
                format!("{url}: the host name could not be resolved")
            }
            ErrorCode::ConnectionRefused => format!("{url}: the server refused the connection"),
            ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => format!("{url}: the server did not answer in time"),
            ErrorCode::TlsCertificateError | ErrorCode::TlsProtocolError | ErrorCode::TlsAlertReceived(_) => {
                format!("{url}: the TLS connection failed (certificate or protocol)")
            }
            ErrorCode::InternalError(Some(m)) => format!("{url}: {m}"),
            other => format!("{url}: the request failed ({other:?})"),
        })
    }
}

/// A size like `512KiB`, `2MiB` or `65536`.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: usize = digits.parse().ok()?;
    let unit = s[digits.len()..].trim().to_ascii_lowercase();
    let mult = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn config(key: &str) -> Option<String> {
    if cfg!(target_family = "wasm") { bindings::kata::plugin::host::config_get(key) } else { None }
}

struct Tools;

impl Guest for Tools {
    fn list() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "fetch".into(),
            description: "Fetch a web page (or any text) by URL and return it as readable text: title, text, links as `text (URL)`. \
                          Only URLs the workspace allows can be fetched."
                .into(),
            args_schema: serde_json::json!({"type": "object", "properties": {
                "url": {"type": "string", "description": "an http:// or https:// URL"},
                "max_chars": {"type": "integer", "description": "most characters of text to return (default 20000)"}},
                "required": ["url"]})
            .to_string(),
        }]
    }

    fn call(name: String, args_json: String) -> Result<String, ToolError> {
        if name != "fetch" {
            return Err(ToolError::UnknownTool(name));
        }
        let args: Value =
            serde_json::from_str(&args_json).map_err(|e| ToolError::InvalidArgs(format!("the arguments are not JSON: {e}")))?;
        let url = args["url"].as_str().ok_or_else(|| ToolError::InvalidArgs("`url` (a string) is required".into()))?;
        let default_chars = config("max_chars").and_then(|v| v.trim().parse().ok()).unwrap_or(MAX_CHARS);
        let max_chars = args["max_chars"].as_u64().map_or(default_chars, |n| (n as usize).clamp(100, 200_000));
        let max_bytes = config("max_bytes").and_then(|v| parse_size(&v)).unwrap_or(MAX_BYTES);
        let agent = config("user_agent").unwrap_or_else(|| format!("kata-web-fetch/{}", env!("CARGO_PKG_VERSION")));
        fetch(url, max_chars, max_bytes, &agent)
    }
}

bindings::export!(Tools with_types_in bindings);

/// The WIT version, in the custom section kata reads.
#[cfg(target_family = "wasm")]
#[used]
#[unsafe(link_section = "kata:wit-version")]
static KATA_WIT_VERSION: [u8; 5] = *b"0.1.2";

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://example.org/docs/guide/intro.html?x=1#top").expect("url")
    }

    #[test]
    fn urls_parse_and_join() {
        let b = base();
        assert_eq!(b.to_string(), "https://example.org/docs/guide/intro.html?x=1");
        assert_eq!(Url::parse("http://h:8080").expect("url").path, "/");
        assert_eq!(Url::parse("http://h?q=1").expect("url").to_string(), "http://h/?q=1");
        assert!(Url::parse("ftp://h/x").is_err() && Url::parse("example.org").is_err() && Url::parse("http://u:p@h/").is_err());
        let j = |h: &str| b.join(h).map(|u| u.to_string());
        assert_eq!(j("next.html").as_deref(), Some("https://example.org/docs/guide/next.html"));
        assert_eq!(j("../api/").as_deref(), Some("https://example.org/docs/api/"));
        assert_eq!(j("/root").as_deref(), Some("https://example.org/root"));
        assert_eq!(j("//cdn.example.org/a").as_deref(), Some("https://cdn.example.org/a"));
        assert_eq!(j("http://other.org/x").as_deref(), Some("http://other.org/x"));
        assert_eq!(j("?page=2").as_deref(), Some("https://example.org/docs/guide/intro.html?page=2"));
        assert_eq!(j("#section"), None);
        assert_eq!(j("javascript:alert(1)"), None);
        assert_eq!(j("mailto:a@b.c"), None);
    }

    #[test]
    fn html_becomes_readable_text_with_links() {
        let html = r#"<!DOCTYPE html><html><head><title> The  Page </title><style>body { color: red }</style>
            <script>var secret = "<p>not text</p>";</script></head>
            <body><nav><a href="/">Home</a></nav>
            <h1>Hello &amp; welcome</h1>
            <p>Some   <b>bold</b>
               text with a <a href="next.html" class="x">link</a>.</p>
            <!-- a comment <p>hidden</p> -->
            <ul><li>one</li><li>two &lt;3 &#8212; &#x2764;</li></ul>
            <pre>  keep   spacing
  here</pre>
            <p><img src="a.png" alt="a cat"> <a href="https://other.org/">https://other.org/</a></p>
            <noscript>enable js</noscript><p>a &lt; b &unknown; &amp</p>
            </body></html>"#;
        let (title, text) = html_to_text(html, &base());
        assert_eq!(title.as_deref(), Some("The Page"));
        let want = "Home (https://example.org/)\n\n\
                    # Hello & welcome\n\n\
                    Some bold text with a link (https://example.org/docs/guide/next.html).\n\n\
                    - one\n\
                    - two <3 — ❤\n\n  \
                    keep   spacing\n  here\n\n\
                    [image: a cat] https://other.org/\n\n\
                    a < b &unknown; &";
        assert_eq!(text, want, "\n{text}");
        assert!(!text.contains("secret") && !text.contains("color") && !text.contains("hidden") && !text.contains("enable js"));
    }

    #[test]
    fn bodies_are_read_by_their_type_and_cut() {
        assert_eq!(kind_of(Some("text/html; charset=utf-8"), b""), Kind::Html);
        assert_eq!(kind_of(Some("application/json"), b"{}"), Kind::Text);
        assert_eq!(kind_of(Some("application/ld+json"), b"{}"), Kind::Text);
        assert_eq!(kind_of(Some("image/png"), b"\x89PNG"), Kind::Binary);
        assert_eq!(kind_of(None, b"<!doctype html><p>x"), Kind::Html);
        assert_eq!(kind_of(None, b"plain words"), Kind::Text);
        assert_eq!(kind_of(Some("application/octet-stream"), &[0, 159, 146, 150]), Kind::Binary);
        let url = Url::parse("http://h/x.txt").expect("url");
        let page = |status, ct: &str, body: &[u8]| Page {
            status,
            content_type: Some(ct.into()),
            location: None,
            body: body.to_vec(),
            truncated: false,
        };
        assert_eq!(render(&url, &page(200, "text/plain", b"  hello \n"), 100).expect("text"), "URL: http://h/x.txt\n\nhello");
        let out = render(&url, &page(200, "text/html", b"<title>T</title><p>abcdef</p>"), 3).expect("html");
        assert!(out.starts_with("URL: http://h/x.txt\nTitle: T\n\nabc\n\n[… cut at 3 of 6 characters"), "{out}");
        assert!(matches!(render(&url, &page(404, "text/html", b"gone"), 100), Err(ToolError::Failed(m)) if m.contains("HTTP 404")));
        assert!(matches!(render(&url, &page(200, "image/png", b"x"), 100), Err(ToolError::Failed(m)) if m.contains("not text")));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("2MiB"), Some(2 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
    }
}
