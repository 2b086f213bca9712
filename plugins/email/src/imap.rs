//! An IMAP4rev1 client (RFC 3501), just what polling a mailbox needs:
//! greeting, CAPABILITY, STARTTLS, AUTHENTICATE PLAIN or LOGIN, EXAMINE,
//! UID SEARCH, UID FETCH with literals, NOOP and LOGOUT; and the
//! UIDVALIDITY-aware cursor.

use kata_sdk::ChannelError;

use crate::wire::{NetError, Transport, Wire};

/// When to upgrade a `tcp://` connection with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// When the server offers it (the default).
    Auto,
    /// Always; a server that does not offer it is a configuration error.
    Required,
    /// Never (a test server on loopback).
    Off,
}

impl StartTls {
    /// Parse the `starttls` config value.
    pub fn parse(v: Option<&str>) -> Result<StartTls, ChannelError> {
        match v.map(str::trim) {
            None | Some("auto") => Ok(StartTls::Auto),
            Some("required") => Ok(StartTls::Required),
            Some("off") => Ok(StartTls::Off),
            Some(other) => Err(ChannelError::InvalidConfig(format!(
                "config key `starttls` must be \"auto\" (when the server offers it), \"required\" or \"off\", got {other:?}"
            ))),
        }
    }
}

/// One untagged response line with the literals it carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Untagged {
    /// The text, literals replaced by their `{n}` markers.
    pub text: String,
    /// The literals, in order.
    pub literals: Vec<Vec<u8>>,
}

/// The tagged completion of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// `OK`, `NO` or `BAD`.
    pub status: String,
    /// The rest of the line.
    pub text: String,
    /// Untagged responses that came before it.
    pub untagged: Vec<Untagged>,
}

impl Done {
    /// Whether the command succeeded.
    pub fn ok(&self) -> bool {
        self.status == "OK"
    }
}

/// What EXAMINE says about a mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// UIDVALIDITY (0 when the server did not say).
    pub uid_validity: u32,
    /// UIDNEXT, when the server said.
    pub uid_next: Option<u32>,
    /// Messages in the mailbox.
    pub exists: u32,
}

/// One fetched mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Its UID.
    pub uid: u32,
    /// INTERNALDATE (when the server received it), ms since the epoch.
    pub internal_ms: Option<u64>,
    /// The whole mail (BODY[]).
    pub raw: Vec<u8>,
}

/// A connected IMAP session.
pub struct Imap<T: Transport> {
    w: Wire<T>,
    tag: u32,
    /// Capabilities, upper case.
    pub caps: Vec<String>,
    /// What to call the server in messages ("IMAP server tls://…").
    pub what: String,
}

/// Quote `s` as an IMAP quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl<T: Transport> Imap<T> {
    /// Read the server's greeting on a fresh connection.
    pub fn greet(t: T, timeout_ms: u32, what: &str) -> Result<Self, ChannelError> {
        let mut imap = Imap { w: Wire::new(t, timeout_ms), tag: 0, caps: Vec::new(), what: what.to_string() };
        let line = imap.w.line().map_err(|e| e.channel(what))?;
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("* BYE") {
            return Err(ChannelError::Network(format!("{what} refused the connection: {line}")));
        }
        if !upper.starts_with("* OK") && !upper.starts_with("* PREAUTH") {
            return Err(ChannelError::Fatal(format!("{what} does not speak IMAP (its greeting was {line:?})")));
        }
        imap.caps = caps_in(&line);
        Ok(imap)
    }

    /// The transport (for tests).
    pub fn wire(&self) -> &Wire<T> {
        &self.w
    }

    fn net(&self, e: NetError) -> ChannelError {
        e.channel(&self.what)
    }

    /// Send `cmd` with a fresh tag and read up to its completion.
    /// `continuation` answers a `+` request (SASL without SASL-IR).
    pub fn command(&mut self, cmd: &str, continuation: Option<&str>) -> Result<Done, ChannelError> {
        self.tag += 1;
        let tag = format!("K{}", self.tag);
        self.w.send(format!("{tag} {cmd}\r\n").as_bytes()).map_err(|e| self.net(e))?;
        let mut untagged = Vec::new();
        let mut answered = false;
        // Bounded: a server that never completes runs into the read timeout.
        loop {
            let (text, literals) = self.response_line()?;
            if let Some(rest) = text.strip_prefix(&format!("{tag} ")) {
                let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let status = status.to_ascii_uppercase();
                let done = Done { status, text: text.to_string(), untagged };
                if let Some(c) = caps_in_code(&done.text) {
                    self.caps = c;
                }
                return Ok(done);
            }
            if text.starts_with('+') {
                match continuation {
                    Some(c) if !answered => {
                        answered = true;
                        self.w.send(format!("{c}\r\n").as_bytes()).map_err(|e| self.net(e))?;
                    }
                    // Cancel a SASL exchange we cannot continue.
                    _ => self.w.send(b"*\r\n").map_err(|e| self.net(e))?,
                }
                continue;
            }
            if text.to_ascii_uppercase().starts_with("* BYE") && !cmd.eq_ignore_ascii_case("LOGOUT") {
                return Err(ChannelError::Network(format!("{} closed the session: {text}", self.what)));
            }
            let caps = caps_in(&text);
            if !caps.is_empty() {
                self.caps = caps;
            }
            untagged.push(Untagged { text, literals });
        }
    }

    /// One response line, with any literals it announces read in.
    fn response_line(&mut self) -> Result<(String, Vec<Vec<u8>>), ChannelError> {
        let mut text = self.w.line().map_err(|e| self.net(e))?;
        let mut literals = Vec::new();
        while let Some(n) = literal_len(&text) {
            let lit = self.w.exact(n).map_err(|e| self.net(e))?;
            literals.push(lit);
            let more = self.w.line().map_err(|e| self.net(e))?;
            text.push_str(&more);
        }
        Ok((text, literals))
    }

    /// Upgrade with STARTTLS as `mode` asks (`secure`: already TLS), then
    /// log in as `user` with the secret `password`: AUTHENTICATE PLAIN when
    /// offered (any password), else LOGIN with a quoted string.
    pub fn login(&mut self, user: &str, mode: StartTls, secure: bool) -> Result<(), ChannelError> {
        if self.caps.is_empty() {
            self.command("CAPABILITY", None)?;
        }
        let mut secure = secure;
        if !secure && mode != StartTls::Off && self.has("STARTTLS") {
            let done = self.command("STARTTLS", None)?;
            if !done.ok() {
                return Err(ChannelError::Network(format!("{} refused STARTTLS: {}", self.what, done.text)));
            }
            self.w.start_tls().map_err(|e| self.net(e))?;
            secure = true;
            // Capabilities before TLS cannot be trusted (RFC 3501 6.2.1).
            self.caps.clear();
            self.command("CAPABILITY", None)?;
        }
        if !secure && mode == StartTls::Required {
            return Err(ChannelError::InvalidConfig(format!(
                "{} does not offer STARTTLS and config `starttls` is \"required\": use a tls:// URL or set starttls = \"auto\"",
                self.what
            )));
        }
        if self.has("LOGINDISABLED") && !self.has("AUTH=PLAIN") {
            return Err(ChannelError::InvalidConfig(format!(
                "{} refuses to log in without TLS (LOGINDISABLED): use a tls:// URL or allow STARTTLS",
                self.what
            )));
        }
        let done = if self.has("AUTH=PLAIN") {
            let creds = format!("{{{{base64:\0{user}\0{{{{secret:password}}}}}}}}");
            if self.has("SASL-IR") {
                self.command(&format!("AUTHENTICATE PLAIN {creds}"), None)?
            } else {
                self.command("AUTHENTICATE PLAIN", Some(&creds))?
            }
        } else {
            self.command(&format!("LOGIN {} \"{{{{secret:password}}}}\"", quote(user)), None)?
        };
        if done.ok() {
            return Ok(());
        }
        let upper = done.text.to_ascii_uppercase();
        if upper.contains("[UNAVAILABLE]") || upper.contains("[INUSE]") {
            return Err(ChannelError::Network(format!("{} cannot log in now: {}", self.what, done.text)));
        }
        Err(ChannelError::AuthFailed(format!(
            "{} refused the login of {user:?}: {} {} (check config `username` and the secret `password`)",
            self.what, done.status, done.text
        )))
    }

    /// Whether the server announced `cap`.
    pub fn has(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }

    /// EXAMINE `mailbox` (read-only: nothing kata does changes flags).
    pub fn examine(&mut self, mailbox: &str) -> Result<Mailbox, ChannelError> {
        let done = self.command(&format!("EXAMINE {}", quote(mailbox)), None)?;
        if !done.ok() {
            return Err(ChannelError::InvalidConfig(format!(
                "{} cannot open the mailbox {mailbox:?} (config `mailbox`): {}",
                self.what, done.text
            )));
        }
        Ok(parse_examine(&done.untagged))
    }

    /// UIDs matching `criteria` (`UID SEARCH …`), ascending.
    pub fn search(&mut self, criteria: &str) -> Result<Vec<u32>, ChannelError> {
        let done = self.command(&format!("UID SEARCH {criteria}"), None)?;
        if !done.ok() {
            return Err(ChannelError::Network(format!("{}: UID SEARCH failed: {}", self.what, done.text)));
        }
        let mut uids: Vec<u32> = done
            .untagged
            .iter()
            .filter_map(|u| u.text.strip_prefix("* SEARCH").or_else(|| u.text.strip_prefix("* search")))
            .flat_map(|rest| rest.split_whitespace().filter_map(|n| n.parse().ok()).collect::<Vec<u32>>())
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// Fetch whole mails by UID, without setting \Seen.
    pub fn fetch(&mut self, uids: &[u32]) -> Result<Vec<Fetched>, ChannelError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set: Vec<String> = uids.iter().map(u32::to_string).collect();
        let done = self.command(&format!("UID FETCH {} (UID INTERNALDATE BODY.PEEK[])", set.join(",")), None)?;
        if !done.ok() {
            return Err(ChannelError::Network(format!("{}: UID FETCH failed: {}", self.what, done.text)));
        }
        let mut out: Vec<Fetched> = done.untagged.iter().filter_map(parse_fetch).filter(|f| uids.contains(&f.uid)).collect();
        out.sort_by_key(|f| f.uid);
        out.dedup_by_key(|f| f.uid);
        Ok(out)
    }

    /// End the session politely (errors ignored: the connection is dropped anyway).
    pub fn logout(&mut self) {
        let _ = self.command("LOGOUT", None);
    }
}

/// `{123}` or `{123+}` at the end of a line: a literal of that many bytes follows.
fn literal_len(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// Capabilities in a greeting or untagged CAPABILITY line.
fn caps_in(line: &str) -> Vec<String> {
    if let Some(rest) = line.strip_prefix("* CAPABILITY ").or_else(|| line.strip_prefix("* capability ")) {
        return rest.split_whitespace().map(str::to_ascii_uppercase).collect();
    }
    caps_in_code(line).unwrap_or_default()
}

/// `[CAPABILITY …]` response code in a status line.
fn caps_in_code(text: &str) -> Option<Vec<String>> {
    let upper = text.to_ascii_uppercase();
    let start = upper.find("[CAPABILITY ")?;
    let end = upper[start..].find(']')? + start;
    Some(upper[start + 12..end].split_whitespace().map(str::to_string).collect())
}

/// UIDVALIDITY, UIDNEXT and EXISTS from EXAMINE's untagged responses.
pub fn parse_examine(untagged: &[Untagged]) -> Mailbox {
    let mut m = Mailbox::default();
    for u in untagged {
        let upper = u.text.to_ascii_uppercase();
        if let Some(v) = code_number(&upper, "UIDVALIDITY") {
            m.uid_validity = v;
        }
        if let Some(v) = code_number(&upper, "UIDNEXT") {
            m.uid_next = Some(v);
        }
        if let Some(n) = upper.strip_prefix("* ").and_then(|r| r.strip_suffix(" EXISTS")) {
            m.exists = n.trim().parse().unwrap_or(0);
        }
    }
    m
}

fn code_number(upper: &str, code: &str) -> Option<u32> {
    let at = upper.find(&format!("[{code} "))?;
    upper[at + code.len() + 2..].split(']').next()?.trim().parse().ok()
}

/// A `* n FETCH (UID u INTERNALDATE "…" BODY[] {len}…)` response; None for
/// other FETCH responses (flag updates) and other lines.
pub fn parse_fetch(u: &Untagged) -> Option<Fetched> {
    let upper = u.text.to_ascii_uppercase();
    let paren = upper.find(" FETCH (")?;
    let items = &u.text[paren + 8..];
    let items_upper = &upper[paren + 8..];
    let uid = items_upper.split_whitespace().skip_while(|w| *w != "UID").nth(1)?.trim_end_matches(')').parse().ok()?;
    let internal_ms = items_upper.find("INTERNALDATE \"").and_then(|at| {
        let s = &items[at + 14..];
        s.find('"').and_then(|end| crate::mime::parse_internal_date(&s[..end]))
    });
    if !items_upper.contains("BODY[]") {
        return None;
    }
    let raw = u.literals.last()?.clone();
    Some(Fetched { uid, internal_ms, raw })
}

/// kata's position in a mailbox: `uidvalidity:last-uid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The mailbox's UIDVALIDITY when the cursor was made.
    pub validity: u32,
    /// The highest UID handed to kata.
    pub last: u32,
}

impl Cursor {
    /// Parse `validity:last`; None for anything else (a fresh start).
    pub fn parse(s: &str) -> Option<Cursor> {
        let (v, l) = s.trim().split_once(':')?;
        Some(Cursor { validity: v.parse().ok()?, last: l.parse().ok()? })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.validity, self.last)
    }
}

/// What one poll reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// First start: nothing is read; the cursor starts at the newest mail
    /// (old mail is not answered).
    Start(Cursor),
    /// Nothing new since the cursor.
    Idle,
    /// Mail after UID `after`.
    After(u32),
    /// UIDVALIDITY changed (the mailbox was rebuilt: UIDs mean nothing any
    /// more): read the whole mailbox again. Ids are Message-IDs (or a hash
    /// of the content), so mail kata already has is deduplicated by the
    /// inbox; mail received before kata's first start is skipped by date.
    Reread,
}

/// Decide what to read from `cursor` and what EXAMINE said.
pub fn plan(cursor: Option<&str>, mailbox: &Mailbox) -> Plan {
    match cursor.and_then(Cursor::parse) {
        None => Plan::Start(Cursor { validity: mailbox.uid_validity, last: mailbox.uid_next.map_or(0, |n| n.saturating_sub(1)) }),
        Some(c) if c.validity != mailbox.uid_validity => Plan::Reread,
        Some(c) => match mailbox.uid_next {
            Some(next) if next <= c.last.saturating_add(1) => Plan::Idle,
            _ => Plan::After(c.last),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::script::Script;

    fn session(server: &str) -> Imap<Script> {
        Imap::greet(Script::new(server), 100, "IMAP server tcp://x:143").unwrap()
    }

    #[test]
    fn logs_in_with_sasl_plain_and_examines() {
        let mut s = session(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\nK1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n\
* FLAGS (\\Seen)\r\n* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 8] Predicted next UID\r\nK2 OK [READ-ONLY] done\r\n",
        );
        s.login("bob", StartTls::Auto, false).unwrap();
        let m = s.examine("INBOX").unwrap();
        assert_eq!(m, Mailbox { uid_validity: 1_700_000_000, uid_next: Some(8), exists: 3 });
        assert_eq!(s.wire().inner().sent(), "K1 AUTHENTICATE PLAIN {{base64:\0bob\0{{secret:password}}}}\r\nK2 EXAMINE \"INBOX\"\r\n");
        assert!(s.has("IDLE"));
    }

    #[test]
    fn starttls_when_offered_then_login_quoted() {
        let mut s = session(
            "* OK ready\r\n* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\nK1 OK\r\nK2 OK Begin TLS\r\n\
* CAPABILITY IMAP4rev1\r\nK3 OK\r\nK4 OK Logged in\r\n",
        );
        s.login("b\"ob", StartTls::Auto, false).unwrap();
        assert!(s.wire().inner().tls);
        assert_eq!(
            s.wire().inner().sent(),
            "K1 CAPABILITY\r\nK2 STARTTLS\r\nK3 CAPABILITY\r\nK4 LOGIN \"b\\\"ob\" \"{{secret:password}}\"\r\n"
        );
    }

    #[test]
    fn a_refused_login_is_auth_failed_and_required_tls_is_config() {
        let mut s = session("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\nK1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
        match s.login("bob", StartTls::Off, false) {
            Err(ChannelError::AuthFailed(t)) => assert!(t.contains("AUTHENTICATIONFAILED") && t.contains("bob"), "{t}"),
            other => panic!("{other:?}"),
        }
        let mut s = session("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
        assert!(matches!(s.login("bob", StartTls::Required, false), Err(ChannelError::InvalidConfig(_))));
    }

    #[test]
    fn sasl_without_ir_answers_the_continuation() {
        let mut s = session("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n+ \r\nK1 OK\r\n");
        s.login("bob", StartTls::Off, false).unwrap();
        assert_eq!(s.wire().inner().sent(), "K1 AUTHENTICATE PLAIN\r\n{{base64:\0bob\0{{secret:password}}}}\r\n");
    }

    #[test]
    fn search_and_fetch_with_literals() {
        let mail1 = "Subject: one\r\n\r\nfirst {3}\r\n";
        let mail2 = "Subject: two\r\n\r\nsecond\r\n";
        let server = format!(
            "* OK hi\r\n* SEARCH 7 5 6\r\nK1 OK\r\n* 1 FETCH (FLAGS (\\Seen))\r\n\
* 2 FETCH (UID 6 INTERNALDATE \"02-Dec-2026 15:00:00 +0000\" BODY[] {{{}}}\r\n{mail1})\r\n\
* 3 FETCH (INTERNALDATE \"02-Dec-2026 15:00:01 +0000\" BODY[] {{{}}}\r\n{mail2} UID 7)\r\nK2 OK\r\n",
            mail1.len(),
            mail2.len()
        );
        let mut s = session(&server);
        assert_eq!(s.search("UID 6:*").unwrap(), [5, 6, 7]);
        let f = s.fetch(&[6, 7]).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].uid, f[0].raw.as_slice()), (6, mail1.as_bytes()));
        assert_eq!((f[1].uid, f[1].raw.as_slice()), (7, mail2.as_bytes()));
        assert_eq!(f[1].internal_ms.unwrap() - f[0].internal_ms.unwrap(), 1000);
        assert!(s.wire().inner().sent().ends_with("K2 UID FETCH 6,7 (UID INTERNALDATE BODY.PEEK[])\r\n"));
    }

    #[test]
    fn bye_and_garbage_are_errors_not_panics() {
        assert!(matches!(Imap::greet(Script::new("* BYE busy\r\n"), 10, "x"), Err(ChannelError::Network(_))));
        assert!(matches!(Imap::greet(Script::new("220 smtp here\r\n"), 10, "x"), Err(ChannelError::Fatal(_))));
        assert!(matches!(Imap::greet(Script::new(""), 10, "x"), Err(ChannelError::Network(_))));
        let mut s = session("* OK hi\r\n* BYE shutting down\r\n");
        assert!(matches!(s.search("ALL"), Err(ChannelError::Network(_))));
    }

    #[test]
    fn the_cursor_follows_uidvalidity() {
        let mb = Mailbox { uid_validity: 9, uid_next: Some(12), exists: 11 };
        assert_eq!(plan(None, &mb), Plan::Start(Cursor { validity: 9, last: 11 }));
        assert_eq!(plan(Some("9:11"), &mb), Plan::Idle);
        assert_eq!(plan(Some("9:4"), &mb), Plan::After(4));
        assert_eq!(plan(Some("8:11"), &mb), Plan::Reread);
        assert_eq!(plan(Some("garbage"), &mb), Plan::Start(Cursor { validity: 9, last: 11 }));
        assert_eq!(plan(Some("9:4"), &Mailbox { uid_next: None, ..mb }), Plan::After(4));
        assert_eq!(Cursor { validity: 9, last: 4 }.to_string(), "9:4");
    }
}
