//! Reading e-mail (RFC 5322 and MIME, RFC 2045–2047 and 2231): headers with
//! folding and encoded words, addresses, dates, multipart bodies, transfer
//! encodings and charsets, the plain text of a mail and its attachments.
//! Pure functions, unit-tested natively.

/// One header field, name as written, value unfolded (raw: encoded words kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name, e.g. `Subject`.
    pub name: String,
    /// The unfolded value, leading whitespace trimmed.
    pub value: String,
}

/// A parsed entity: a whole mail or one MIME part.
#[derive(Debug, Clone, Default)]
pub struct Part {
    /// Its header fields, in order.
    pub headers: Vec<Header>,
    /// The body bytes as they were (still transfer-encoded).
    pub body: Vec<u8>,
}

/// An attachment found in a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The file name (empty when none is given).
    pub name: String,
    /// Its MIME type, lower case.
    pub mime_type: String,
    /// Its decoded size in bytes.
    pub size: u64,
}

/// An address with its display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, decoded; None when absent.
    pub name: Option<String>,
    /// The address (`local@domain`), lower case.
    pub address: String,
}

/// Split raw mail bytes into headers and body.
pub fn parse(raw: &[u8]) -> Part {
    // The header block ends at the first empty line (CRLF CRLF or LF LF).
    let (head, body) = match find_blank_line(raw) {
        Some((end, body_start)) => (&raw[..end], &raw[body_start..]),
        None => (raw, &raw[raw.len()..]),
    };
    Part { headers: parse_headers(head), body: body.to_vec() }
}

fn find_blank_line(raw: &[u8]) -> Option<(usize, usize)> {
    if raw.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if raw.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\n' {
            if raw[i + 1..].starts_with(b"\r\n") {
                return Some((i + 1, i + 3));
            }
            if raw[i + 1..].starts_with(b"\n") {
                return Some((i + 1, i + 2));
            }
        }
        i += 1;
    }
    None
}

/// Parse a header block: one field per line, continuation lines (starting
/// with whitespace) folded into the previous one.
pub fn parse_headers(head: &[u8]) -> Vec<Header> {
    let text = latin1_or_utf8(head);
    let mut out: Vec<Header> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.value.push(' ');
                last.value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                out.push(Header { name: name.to_string(), value: value.trim().to_string() });
            }
        }
    }
    out
}

impl Part {
    /// The first header called `name` (case-insensitive), raw.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// Every header called `name`, raw.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// A header decoded for display (encoded words, RFC 2047).
    pub fn decoded(&self, name: &str) -> Option<String> {
        self.header(name).map(decode_words)
    }

    /// The content type (lower case, no parameters) and its parameters.
    pub fn content_type(&self) -> (String, Vec<(String, String)>) {
        match self.header("content-type") {
            Some(v) => {
                let (main, params) = split_params(v);
                let main = main.trim().to_ascii_lowercase();
                (if main.contains('/') { main } else { "text/plain".into() }, params)
            }
            None => ("text/plain".into(), Vec::new()),
        }
    }

    /// The body with its Content-Transfer-Encoding undone.
    pub fn decoded_body(&self) -> Vec<u8> {
        match self.header("content-transfer-encoding").map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("base64") => base64_decode(&self.body),
            Some("quoted-printable") => qp_decode(&self.body, false),
            _ => self.body.clone(),
        }
    }

    /// The body as text, decoded from its charset.
    pub fn text(&self) -> String {
        let (_, params) = self.content_type();
        let charset = param(&params, "charset").unwrap_or_default();
        decode_charset(&self.decoded_body(), &charset)
    }

    /// Whether the part is marked as an attachment, or is a non-text part
    /// with a file name.
    fn disposition(&self) -> (bool, Option<String>) {
        let (kind, dparams) = self.header("content-disposition").map(split_params).unwrap_or_default();
        let (_, cparams) = self.content_type();
        let name = param(&dparams, "filename").or_else(|| param(&cparams, "name"));
        (kind.trim().eq_ignore_ascii_case("attachment"), name)
    }

    /// The subparts of a multipart entity (empty for other types).
    pub fn subparts(&self) -> Vec<Part> {
        let (ctype, params) = self.content_type();
        if !ctype.starts_with("multipart/") {
            return Vec::new();
        }
        let Some(boundary) = param(&params, "boundary") else { return Vec::new() };
        split_multipart(&self.body, &boundary).into_iter().map(|b| parse(&b)).collect()
    }
}

/// Split `value; a=b; c="d"` into `value` and its parameters (names lower
/// case, values unquoted; RFC 2231 `name*=charset''%xx` and continuations
/// `name*0=`, `name*1=` joined and decoded).
pub fn split_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = split_unquoted(value, ';');
    let main = if parts.is_empty() { String::new() } else { parts.remove(0) };
    let mut params: Vec<(String, String)> = Vec::new();
    // name -> (charset-encoded?, pieces by index)
    type Pieces = Vec<(u32, String)>;
    let mut continued: Vec<(String, bool, Pieces)> = Vec::new();
    for p in parts {
        let Some((name, val)) = p.split_once('=') else { continue };
        let name = name.trim().to_ascii_lowercase();
        let val = unquote(val.trim());
        if let Some((base, rest)) = name.split_once('*') {
            let encoded = rest.ends_with('*') || rest.is_empty();
            let index: u32 = rest.trim_end_matches('*').parse().unwrap_or(0);
            match continued.iter_mut().find(|c| c.0 == base) {
                Some(c) => {
                    c.1 |= encoded && index == 0;
                    c.2.push((index, val));
                }
                None => continued.push((base.to_string(), encoded && index == 0, vec![(index, val)])),
            }
        } else {
            params.push((name, val));
        }
    }
    for (name, encoded, mut pieces) in continued {
        pieces.sort_by_key(|p| p.0);
        let joined: String = pieces.into_iter().map(|p| p.1).collect();
        let value = if encoded {
            // charset'language'percent-encoded
            let mut it = joined.splitn(3, '\'');
            match (it.next(), it.next(), it.next()) {
                (Some(cs), Some(_), Some(data)) => decode_charset(&percent_decode(data), cs),
                _ => joined,
            }
        } else {
            joined
        };
        params.retain(|p| p.0 != name);
        params.push((name, value));
    }
    (main, params)
}

/// A parameter's value by name (lower case), encoded words decoded.
pub fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params.iter().find(|p| p.0 == name).map(|p| decode_words(&p.1))
}

fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c == sep && !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut esc = false;
            for c in inner.chars() {
                if esc || c != '\\' {
                    out.push(c);
                    esc = false;
                } else {
                    esc = true;
                }
            }
            out
        }
        None => s.to_string(),
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The bodies of a multipart entity between `--boundary` lines (the
/// preamble and epilogue dropped).
fn split_multipart(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let trimmed = trim_crlf(line);
        if trimmed.starts_with(delim.as_bytes()) {
            let rest = &trimmed[delim.len()..];
            let closing = rest.starts_with(b"--");
            if rest.iter().all(|b| b.is_ascii_whitespace()) || closing {
                if let Some(mut p) = current.take() {
                    // The line break before a delimiter belongs to it.
                    if p.ends_with(b"\r\n") {
                        p.truncate(p.len() - 2);
                    } else if p.ends_with(b"\n") {
                        p.truncate(p.len() - 1);
                    }
                    parts.push(p);
                }
                if closing {
                    return parts;
                }
                current = Some(Vec::new());
                continue;
            }
        }
        if let Some(p) = current.as_mut() {
            p.extend_from_slice(line);
        }
    }
    // No closing delimiter: keep what was read.
    if let Some(p) = current {
        parts.push(p);
    }
    parts
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What kata takes from a mail's body: its text and its attachments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// The plain text (from text/plain, else text/html with tags removed).
    pub text: String,
    /// Attachments, in order.
    pub files: Vec<FileInfo>,
}

/// Walk the MIME tree: the first text/plain part that is not an attachment
/// is the text (text/html when there is none); every part with a file name
/// or marked as an attachment is listed.
pub fn content(part: &Part) -> Content {
    let mut plain: Option<String> = None;
    let mut html: Option<String> = None;
    let mut files = Vec::new();
    walk(part, &mut plain, &mut html, &mut files, 0);
    let text = plain.or_else(|| html.map(|h| html_to_text(&h))).unwrap_or_default();
    Content { text: text.trim_end().to_string(), files }
}

fn walk(part: &Part, plain: &mut Option<String>, html: &mut Option<String>, files: &mut Vec<FileInfo>, depth: u32) {
    let (ctype, _) = part.content_type();
    if ctype.starts_with("multipart/") && depth < 16 {
        for p in part.subparts() {
            walk(&p, plain, html, files, depth + 1);
        }
        return;
    }
    let (attachment, name) = part.disposition();
    if attachment || (name.is_some() && !ctype.starts_with("text/")) || (!ctype.starts_with("text/") && ctype != "message/rfc822") {
        let size = part.decoded_body().len() as u64;
        files.push(FileInfo { name: name.unwrap_or_default(), mime_type: ctype, size });
        return;
    }
    if ctype == "text/plain" && plain.is_none() {
        *plain = Some(part.text());
    } else if ctype == "text/html" && html.is_none() {
        *html = Some(part.text());
    } else if ctype == "message/rfc822" {
        files.push(FileInfo { name: name.unwrap_or_default(), mime_type: ctype, size: part.decoded_body().len() as u64 });
    }
}

/// A rough text rendering of HTML: tags dropped, block ends as line breaks,
/// the common entities decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut skip_until: Option<&str> = None;
    while let Some(lt) = rest.find('<') {
        if skip_until.is_none() {
            out.push_str(&rest[..lt]);
        }
        let after = &rest[lt + 1..];
        let Some(gt) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after[..gt].trim().to_ascii_lowercase();
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if let Some(end) = skip_until {
            if tag.starts_with('/') && name == end {
                skip_until = None;
            }
        } else if name == "style" || name == "script" || name == "head" {
            if !tag.starts_with('/') {
                skip_until = Some(if name == "style" {
                    "style"
                } else if name == "script" {
                    "script"
                } else {
                    "head"
                });
            }
        } else if matches!(name.as_str(), "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "blockquote") {
            out.push('\n');
        }
        rest = &after[gt + 1..];
    }
    if skip_until.is_none() {
        out.push_str(rest);
    }
    let decoded = decode_entities(&out);
    let lines: Vec<&str> = decoded.lines().map(str::trim).collect();
    let mut text = lines.join("\n");
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    text.trim().to_string()
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let ent = &after[..e];
            let c = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ if ent.starts_with("#x") || ent.starts_with("#X") => u32::from_str_radix(&ent[2..], 16).ok().and_then(char::from_u32),
                _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decode RFC 2047 encoded words (`=?utf-8?B?...?=`, `=?iso-8859-1?Q?...?=`);
/// whitespace between two adjacent encoded words is dropped.
pub fn decode_words(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut last_was_word = false;
    let mut pending_space = String::new();
    while !rest.is_empty() {
        if let Some((decoded, used)) = encoded_word(rest) {
            if !last_was_word {
                out.push_str(&pending_space);
            }
            pending_space.clear();
            out.push_str(&decoded);
            rest = &rest[used..];
            last_was_word = true;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == ' ' || c == '\t' {
            pending_space.push(c);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(c);
            last_was_word = false;
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&pending_space);
    out
}

/// One encoded word at the start of `s`: its text and the bytes it used.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = &body[..q1];
    let rest = &body[q1 + 1..];
    let q2 = rest.find('?')?;
    let enc = &rest[..q2];
    let data_and_more = &rest[q2 + 1..];
    let end = data_and_more.find("?=")?;
    let data = &data_and_more[..end];
    if data.contains(' ') || charset.is_empty() {
        return None;
    }
    // RFC 2231 language suffix: charset*lang.
    let charset = charset.split('*').next().unwrap_or(charset);
    let bytes = match enc {
        "B" | "b" => base64_decode(data.as_bytes()),
        "Q" | "q" => qp_decode(data.as_bytes(), true),
        _ => return None,
    };
    let used = 2 + q1 + 1 + q2 + 1 + end + 2;
    Some((decode_charset(&bytes, charset), used))
}

/// Bytes in `charset` as text: UTF-8 and US-ASCII, ISO-8859-1 and
/// Windows-1252 (and ISO-8859-15 approximately); anything else is read as
/// UTF-8 with invalid bytes replaced.
pub fn decode_charset(bytes: &[u8], charset: &str) -> String {
    let cs = charset.trim().trim_matches('"').to_ascii_lowercase();
    match cs.as_str() {
        "iso-8859-1" | "latin1" | "iso8859-1" | "l1" | "iso-8859-15" | "latin-9" => bytes.iter().map(|&b| b as char).collect(),
        "windows-1252" | "cp1252" => bytes.iter().map(|&b| cp1252(b)).collect(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•',
        '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
    ];
    if (0x80..0xa0).contains(&b) { HIGH[(b - 0x80) as usize] } else { b as char }
}

/// Header bytes as text: UTF-8 when valid (RFC 6532), else Latin-1.
fn latin1_or_utf8(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.iter().map(|&c| c as char).collect(),
    }
}

/// Standard base64, ignoring whitespace and anything outside the alphabet.
pub fn base64_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Quoted-printable (RFC 2045); `header` also turns `_` into a space (RFC 2047 Q).
pub fn qp_decode(data: &[u8], header: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'=' => {
                // Soft line break.
                if data[i + 1..].starts_with(b"\r\n") {
                    i += 3;
                    continue;
                }
                if data[i + 1..].starts_with(b"\n") {
                    i += 2;
                    continue;
                }
                match (data.get(i + 1).copied().and_then(hex), data.get(i + 2).copied().and_then(hex)) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b'_' if header => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Parse an address list (`To`, `Cc`, `From`): `"Name" <a@b>, c@d, Group: e@f;`.
pub fn addresses(value: &str) -> Vec<Mailbox> {
    let mut out = Vec::new();
    for item in split_unquoted(value, ',') {
        // A group's name ("Team: a@b") is dropped; its members stay.
        let item = match item.split_once(':') {
            Some((name, rest)) if !name.contains(['<', '@', '"']) => rest.trim_end_matches(';').to_string(),
            _ => item,
        };
        if let Some(m) = mailbox(&item) {
            out.push(m);
        }
    }
    out
}

/// One address: `Name <a@b>`, `<a@b>` or `a@b (comment)`.
pub fn mailbox(item: &str) -> Option<Mailbox> {
    // The end of a group ("Team: a@b, c@d;").
    let item = item.trim().trim_end_matches(';').trim();
    if item.is_empty() {
        return None;
    }
    if let (Some(lt), Some(gt)) = (item.rfind('<'), item.rfind('>'))
        && lt < gt
    {
        let address = item[lt + 1..gt].trim().to_ascii_lowercase();
        let name = decode_words(unquote(item[..lt].trim()).trim());
        if address.contains('@') {
            return Some(Mailbox { name: (!name.is_empty()).then_some(name), address });
        }
        return None;
    }
    // addr-spec, maybe with a (comment) holding the name.
    let (addr, comment) = match (item.find('('), item.rfind(')')) {
        (Some(a), Some(b)) if a < b => (item[..a].trim(), Some(decode_words(item[a + 1..b].trim()))),
        _ => (item, None),
    };
    addr.contains('@').then(|| Mailbox { name: comment.filter(|c| !c.is_empty()), address: addr.to_ascii_lowercase() })
}

/// The message ids in a `Message-ID`, `In-Reply-To` or `References` value,
/// without angle brackets, in order.
pub fn message_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(lt) = rest.find('<') {
        let Some(gt) = rest[lt..].find('>') else { break };
        let id = rest[lt + 1..lt + gt].trim();
        if !id.is_empty() && !id.contains(char::is_whitespace) {
            out.push(id.to_string());
        }
        rest = &rest[lt + gt + 1..];
    }
    if out.is_empty() {
        // Some mailers leave the brackets out.
        let bare = value.trim();
        if !bare.is_empty() && bare.contains('@') && !bare.contains(char::is_whitespace) {
            out.push(bare.to_string());
        }
    }
    out
}

/// An RFC 5322 date (`Tue, 1 Dec 2026 10:00:00 +0100`, obsolete zones too)
/// as milliseconds since the Unix epoch.
pub fn parse_date(value: &str) -> Option<u64> {
    let v = value.split_once(',').map_or(value, |(_, r)| r).trim();
    let v = v.split('(').next().unwrap_or(v);
    let mut it = v.split_whitespace();
    let day: i64 = it.next()?.parse().ok()?;
    let month = month_number(it.next()?)?;
    let mut year: i64 = it.next()?.parse().ok()?;
    if year < 50 {
        year += 2000;
    } else if year < 1000 {
        year += 1900;
    }
    let time = it.next()?;
    let mut t = time.split(':');
    let (h, m): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let s: i64 = t.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let zone = it.next().unwrap_or("+0000");
    let offset_min = match zone {
        z if (z.starts_with('+') || z.starts_with('-')) && z.len() == 5 => {
            let n: i64 = z[1..].parse().ok()?;
            let mins = (n / 100) * 60 + n % 100;
            if z.starts_with('-') { -mins } else { mins }
        }
        "EDT" => -4 * 60,
        "EST" | "CDT" => -5 * 60,
        "CST" | "MDT" => -6 * 60,
        "MST" | "PDT" => -7 * 60,
        "PST" => -8 * 60,
        _ => 0,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + s - offset_min * 60;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// IMAP's INTERNALDATE (`02-Dec-2026 15:00:00 +0000`) in ms.
pub fn parse_internal_date(value: &str) -> Option<u64> {
    let mut it = value.trim().splitn(3, '-');
    let (d, m, rest) = (it.next()?.trim(), it.next()?, it.next()?);
    parse_date(&format!("{d} {m} {rest}"))
}

fn month_number(m: &str) -> Option<i64> {
    const M: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let m = m.to_ascii_lowercase();
    M.iter().position(|x| m.starts_with(x)).map(|i| i as i64 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `ms` since the epoch as an RFC 5322 date in UTC.
pub fn format_date(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MN: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        MN[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Drop the quoted tail of a reply: the last block of `>` lines and the
/// "On … wrote:" line above it, when there is text of its own before it.
pub fn strip_quoted_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && (lines[start - 1].starts_with('>') || lines[start - 1].trim().is_empty()) {
        start -= 1;
    }
    if start == end || !lines[start..end].iter().any(|l| l.starts_with('>')) {
        return text.trim_end().to_string();
    }
    let mut keep = start;
    if keep > 0 && lines[keep - 1].trim_end().ends_with("wrote:") {
        keep -= 1;
    }
    let own = lines[..keep].join("\n");
    if own.trim().is_empty() { text.trim_end().to_string() } else { own.trim_end().to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_unfold_and_decode() {
        let raw = b"Subject: =?UTF-8?B?SMOpbGxv?= =?UTF-8?Q?_w=C3=B6rld?=\r\n  and more\r\nFrom: =?iso-8859-1?q?Ren=E9?= <Rene@Example.ORG>\r\n\r\nbody\r\n";
        let p = parse(raw);
        assert_eq!(p.decoded("subject").unwrap(), "Héllo wörld and more");
        let from = addresses(p.header("from").unwrap());
        assert_eq!(from, vec![Mailbox { name: Some("René".into()), address: "rene@example.org".into() }]);
        assert_eq!(p.body, b"body\r\n");
    }

    #[test]
    fn encoded_words_keep_spaces_to_plain_text() {
        assert_eq!(decode_words("Re: =?utf-8?q?caf=C3=A9?= time"), "Re: café time");
        assert_eq!(decode_words("no words here"), "no words here");
        assert_eq!(decode_words("=?bogus"), "=?bogus");
    }

    #[test]
    fn address_lists() {
        let l = addresses("\"Doe, Ann\" <ann@x.org>, bob@y.org (Bob B), Team: c@z.org, d@z.org;, <e@w.org>");
        let got: Vec<(&str, Option<&str>)> = l.iter().map(|m| (m.address.as_str(), m.name.as_deref())).collect();
        assert_eq!(
            got,
            [("ann@x.org", Some("Doe, Ann")), ("bob@y.org", Some("Bob B")), ("c@z.org", None), ("d@z.org", None), ("e@w.org", None)]
        );
    }

    #[test]
    fn message_id_lists() {
        assert_eq!(message_ids("<a@b> <c@d>\t<e@f>"), ["a@b", "c@d", "e@f"]);
        assert_eq!(message_ids("bare@host"), ["bare@host"]);
        assert!(message_ids("").is_empty());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 1 Jan 1970 00:00:01 +0000"), Some(1000));
        assert_eq!(parse_date("Wed, 2 Dec 2026 16:00:00 +0100"), parse_date("2 Dec 2026 15:00:00 GMT"));
        assert_eq!(parse_internal_date("02-Dec-2026 15:00:00 +0000"), parse_date("2 Dec 2026 15:00:00 +0000"));
        let ms = parse_date("Wed, 2 Dec 2026 15:04:05 +0000").unwrap();
        assert_eq!(format_date(ms), "Wed, 2 Dec 2026 15:04:05 +0000");
        assert_eq!(parse_date("garbage"), None);
    }

    #[test]
    fn multipart_alternative_with_attachment() {
        let raw = "From: a@b\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n\
Content-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 au lait=\r\n, please\r\n--YY\r\nContent-Type: text/html\r\n\r\n<p>Caf&eacute;</p>\r\n--YY--\r\n\
--XX\r\nContent-Type: image/png; name=\"cat.png\"\r\nContent-Disposition: attachment; filename=\"cat.png\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--XX\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n\r\n%PDF\r\n--XX--\r\nepilogue\r\n";
        let c = content(&parse(raw.as_bytes()));
        assert_eq!(c.text, "Café au lait, please");
        assert_eq!(
            c.files,
            vec![
                FileInfo { name: "cat.png".into(), mime_type: "image/png".into(), size: 8 },
                FileInfo { name: "résumé.pdf".into(), mime_type: "application/pdf".into(), size: 4 },
            ]
        );
    }

    #[test]
    fn html_only_mail_becomes_text() {
        let raw = b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p{}</style></head><body><p>Hi &amp; bye</p><br>next</body></html>";
        assert_eq!(content(&parse(raw)).text, "Hi & bye\n\nnext");
    }

    #[test]
    fn rfc2231_continuations() {
        let (_, p) = split_params("attachment; filename*0=\"long \"; filename*1=\"name.txt\"");
        assert_eq!(param(&p, "filename").unwrap(), "long name.txt");
    }

    #[test]
    fn base64_and_qp_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "\0ann\0pw"] {
            assert_eq!(base64_decode(base64_encode(s.as_bytes()).as_bytes()), s.as_bytes());
        }
        assert_eq!(base64_encode(b"\0ann\0pw"), "AGFubgBwdw==");
        assert_eq!(qp_decode(b"a=3Db=\r\nc", false), b"a=bc");
    }

    #[test]
    fn quoted_replies_are_trimmed() {
        let t = "Thanks!\n\nOn Wed, 2 Dec 2026, kata wrote:\n> earlier\n> text\n";
        assert_eq!(strip_quoted_tail(t), "Thanks!");
        assert_eq!(strip_quoted_tail("> only a quote"), "> only a quote");
        assert_eq!(strip_quoted_tail("plain\ntext\n"), "plain\ntext");
    }

    #[test]
    fn a_mail_without_headers_or_body_does_not_panic() {
        for raw in [&b""[..], b"\r\n", b"no colon line", b"Content-Type: multipart/mixed\r\n\r\n--", b"Subject: =?utf-8?B?"] {
            let p = parse(raw);
            let _ = content(&p);
            let _ = p.decoded("subject");
        }
    }
}
