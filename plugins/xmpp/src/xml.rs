//! Just enough XML for an XMPP client stream (RFC 6120 §11): the stream
//! header, then one complete top-level element (stanza) at a time, parsed
//! incrementally from bytes as they arrive; escaping for what kata writes.
//! XMPP forbids comments, processing instructions (but the XML declaration),
//! DTDs and CDATA is discouraged; they are skipped or refused, never trusted.

/// An element: name (with its prefix, if any), attributes, children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// The qualified name, e.g. `message` or `stream:features`.
    pub name: String,
    /// Attributes in document order, values unescaped.
    pub attrs: Vec<(String, String)>,
    /// Child nodes.
    pub children: Vec<Node>,
}

/// A child node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data, unescaped.
    Text(String),
}

impl Element {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.0 == name).map(|a| a.1.as_str())
    }

    /// The local name (without a prefix).
    pub fn local(&self) -> &str {
        self.name.rsplit(':').next().unwrap_or(&self.name)
    }

    /// The namespace declared on this element (`xmlns`).
    pub fn ns(&self) -> Option<&str> {
        self.attr("xmlns")
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with local name `name` (and namespace `ns`, when given).
    pub fn child(&self, name: &str, ns: Option<&str>) -> Option<&Element> {
        self.elements().find(|e| e.local() == name && (ns.is_none() || e.ns() == ns))
    }

    /// All text directly inside, joined.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }
}

/// What the stream brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `<stream:stream …>` (its attributes).
    StreamStart(Vec<(String, String)>),
    /// A complete top-level element.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamEnd,
}

/// Largest stanza kept in the buffer before the stream is given up.
pub const MAX_STANZA: usize = 1 << 20;

/// The incremental reader.
#[derive(Debug, Default)]
pub struct StreamReader {
    buf: Vec<u8>,
}

impl StreamReader {
    /// Add bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Forget everything (a new stream after STARTTLS or SASL).
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// Whether bytes are waiting (more than whitespace).
    pub fn has_pending(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// The next complete event, None when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        // Whitespace between stanzas is keep-alive.
        let start = self.buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(self.buf.len());
        self.buf.drain(..start);
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf[0] != b'<' {
            return Err(format!("text outside any stanza: {:?}", String::from_utf8_lossy(&self.buf[..self.buf.len().min(40)])));
        }
        let text = match std::str::from_utf8(&self.buf) {
            Ok(t) => t,
            // An incomplete UTF-8 sequence at the end: wait for the rest.
            Err(e) if e.error_len().is_none() => std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
            Err(_) => return Err("invalid UTF-8 in the stream".into()),
        };
        if text.starts_with("<?") {
            return match text.find("?>") {
                Some(end) => {
                    self.buf.drain(..end + 2);
                    self.next_event()
                }
                None => Ok(None),
            };
        }
        if text.starts_with("<!") {
            return Err("comments, DTDs and CDATA are not allowed at the top of an XMPP stream".into());
        }
        if text.starts_with("</") {
            return match text.find('>') {
                Some(end) => {
                    self.buf.drain(..end + 1);
                    Ok(Some(Event::StreamEnd))
                }
                None => Ok(None),
            };
        }
        let mut p = Parser { s: text, i: 0 };
        match p.element(0) {
            Ok(Parsed::Open(e)) if e.name == "stream:stream" || e.local() == "stream" => {
                let used = p.i;
                self.buf.drain(..used);
                Ok(Some(Event::StreamStart(e.attrs)))
            }
            Ok(Parsed::Open(_)) => unreachable_open(),
            Ok(Parsed::Done(e)) => {
                let used = p.i;
                self.buf.drain(..used);
                Ok(Some(Event::Stanza(e)))
            }
            Err(Incomplete::More) => {
                if self.buf.len() > MAX_STANZA {
                    Err(format!("a stanza larger than {MAX_STANZA} bytes"))
                } else {
                    Ok(None)
                }
            }
            Err(Incomplete::Bad(why)) => Err(why),
        }
    }
}

fn unreachable_open() -> Result<Option<Event>, String> {
    Err("an unexpected open element".into())
}

enum Parsed {
    /// The stream header (left open).
    Open(Element),
    Done(Element),
}

enum Incomplete {
    More,
    Bad(String),
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn need(&self, n: usize) -> Result<(), Incomplete> {
        if self.i + n > self.s.len() { Err(Incomplete::More) } else { Ok(()) }
    }

    fn skip_ws(&mut self) {
        while self.rest().starts_with([' ', '\t', '\r', '\n']) {
            self.i += 1;
        }
    }

    fn name(&mut self) -> Result<String, Incomplete> {
        let start = self.i;
        while let Some(c) = self.rest().chars().next() {
            if c.is_whitespace() || matches!(c, '/' | '>' | '=' | '<') {
                break;
            }
            self.i += c.len_utf8();
        }
        if self.i == self.s.len() {
            return Err(Incomplete::More);
        }
        if self.i == start {
            return Err(Incomplete::Bad(format!("a name expected at {:?}", self.rest().chars().take(20).collect::<String>())));
        }
        Ok(self.s[start..self.i].to_string())
    }

    /// An element starting at `<`; depth 0 is the top level, where an
    /// unclosed `stream:stream` is the stream header.
    fn element(&mut self, depth: usize) -> Result<Parsed, Incomplete> {
        if depth > 64 {
            return Err(Incomplete::Bad("elements nested more than 64 deep".into()));
        }
        self.need(1)?;
        self.i += 1; // <
        let name = self.name()?;
        let mut e = Element { name, ..Element::default() };
        loop {
            self.skip_ws();
            self.need(1)?;
            if self.rest().starts_with("/>") {
                self.i += 2;
                return Ok(Parsed::Done(e));
            }
            if self.rest().starts_with('/') {
                self.need(2)?;
                return Err(Incomplete::Bad("'/' not followed by '>'".into()));
            }
            if self.rest().starts_with('>') {
                self.i += 1;
                break;
            }
            let an = self.name()?;
            self.skip_ws();
            self.need(1)?;
            if !self.rest().starts_with('=') {
                return Err(Incomplete::Bad(format!("attribute {an} without a value")));
            }
            self.i += 1;
            self.skip_ws();
            self.need(1)?;
            let q = self.rest().chars().next().unwrap_or('"');
            if q != '"' && q != '\'' {
                return Err(Incomplete::Bad(format!("attribute {an}: value not quoted")));
            }
            self.i += 1;
            let end = self.rest().find(q).ok_or(Incomplete::More)?;
            let v = unescape(&self.rest()[..end]);
            self.i += end + 1;
            e.attrs.push((an, v));
        }
        if depth == 0 && (e.name == "stream:stream" || e.local() == "stream") {
            return Ok(Parsed::Open(e));
        }
        // Content until the matching end tag.
        loop {
            let lt = self.rest().find('<').ok_or(Incomplete::More)?;
            if lt > 0 {
                let t = unescape(&self.rest()[..lt]);
                self.i += lt;
                e.children.push(Node::Text(t));
            }
            self.need(2)?;
            if self.rest().starts_with("</") {
                self.i += 2;
                let n = self.name()?;
                self.skip_ws();
                self.need(1)?;
                if !self.rest().starts_with('>') || n != e.name {
                    return Err(Incomplete::Bad(format!("</{n}> closes <{}>", e.name)));
                }
                self.i += 1;
                return Ok(Parsed::Done(e));
            }
            if self.rest().starts_with("<!") || self.rest().starts_with("<?") {
                return Err(Incomplete::Bad("comments, CDATA and processing instructions are not allowed in stanzas".into()));
            }
            match self.element(depth + 1)? {
                Parsed::Done(child) | Parsed::Open(child) => e.children.push(Node::Element(child)),
            }
        }
    }
}

/// Undo the five predefined entities and character references.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = after;
            continue;
        };
        let ent = &after[..semi];
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if ent.starts_with("#x") => u32::from_str_radix(&ent[2..], 16).ok().and_then(char::from_u32),
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
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

/// Escape text or an attribute value; characters XML 1.0 cannot carry are dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_in_pieces() {
        let doc = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'>\
<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features> \n\
<message from='ann@localhost/x' type='chat' id='m1'><body>1 &lt; 2 &amp; caf\u{e9} &#x1F600;</body><active xmlns='http://jabber.org/protocol/chatstates'/></message></stream:stream>";
        let mut r = StreamReader::default();
        let mut events = Vec::new();
        for chunk in doc.as_bytes().chunks(5) {
            r.push(chunk);
            while let Some(ev) = r.next_event().unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(events.len(), 4, "{events:#?}");
        let Event::StreamStart(attrs) = &events[0] else { panic!() };
        assert!(attrs.contains(&("id".into(), "s1".into())));
        let Event::Stanza(f) = &events[1] else { panic!() };
        assert_eq!(
            f.child("mechanisms", Some("urn:ietf:params:xml:ns:xmpp-sasl")).unwrap().child("mechanism", None).unwrap().text(),
            "PLAIN"
        );
        let Event::Stanza(m) = &events[2] else { panic!() };
        assert_eq!((m.local(), m.attr("type")), ("message", Some("chat")));
        assert_eq!(m.child("body", None).unwrap().text(), "1 < 2 & café 😀");
        assert_eq!(events[3], Event::StreamEnd);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in ["<a><b></a>", "text", "<!-- x -->", "<a x=1/>", "<a><![CDATA[x]]></a>"] {
            let mut r = StreamReader::default();
            r.push(bad.as_bytes());
            assert!(r.next_event().is_err(), "{bad}");
        }
        let mut r = StreamReader::default();
        r.push(b"<message><body>incompl");
        assert_eq!(r.next_event(), Ok(None));
        r.push("\u{e9}".as_bytes().split_at(1).0);
        assert_eq!(r.next_event(), Ok(None));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("<a href=\"x\">&'\u{1}"), "&lt;a href=&quot;x&quot;&gt;&amp;&apos;");
        assert_eq!(unescape(&escape("a<b>&\"'")), "a<b>&\"'");
        assert_eq!(unescape("&bogus; & &#65;"), "&bogus; & A");
    }
}
