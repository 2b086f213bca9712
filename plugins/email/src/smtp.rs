//! An SMTP submission client (RFC 5321, 3207, 4954): greeting, EHLO and its
//! capabilities, STARTTLS when offered, AUTH PLAIN or LOGIN when offered,
//! MAIL FROM / RCPT TO / DATA with dot-stuffing, RSET, QUIT; several
//! messages in one session ([`Smtp::deliver_each`]); and the mapping of
//! reply codes to channel errors.

use kata_sdk::ChannelError;

use crate::imap::StartTls;
use crate::wire::{NetError, Transport, Wire};

/// One (possibly multi-line) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, without the code.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text, lines joined with a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    fn positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// A connected SMTP session.
pub struct Smtp<T: Transport> {
    w: Wire<T>,
    /// EHLO keywords and their parameters, upper case (`AUTH PLAIN LOGIN`).
    pub caps: Vec<String>,
    /// "SMTP server tcp://…", for messages.
    pub what: String,
    /// The pause asked of the host after a temporary refusal (421, 4.7.x).
    pub retry_ms: u64,
    /// The connection failed, or the server closed the session (421): no
    /// further command can go through it.
    broken: bool,
}

impl<T: Transport> Smtp<T> {
    /// Read the greeting (220) on a fresh connection.
    pub fn greet(t: T, timeout_ms: u32, what: &str, retry_ms: u64) -> Result<Self, ChannelError> {
        let mut s = Smtp { w: Wire::new(t, timeout_ms), caps: Vec::new(), what: what.to_string(), retry_ms, broken: false };
        let r = s.reply()?;
        if r.code != 220 {
            return Err(s.refused("greeting", &r));
        }
        Ok(s)
    }

    /// The transport (for tests).
    pub fn wire(&self) -> &Wire<T> {
        &self.w
    }

    /// The channel error for a failed read or write; the session is broken.
    fn net(&mut self, e: NetError) -> ChannelError {
        self.broken = true;
        e.channel(&self.what)
    }

    /// Whether the session can take another command (no connection error,
    /// no 421 or garbage from the server so far).
    pub fn usable(&self) -> bool {
        !self.broken
    }

    /// Read one reply (all its lines).
    pub fn reply(&mut self) -> Result<Reply, ChannelError> {
        let mut lines = Vec::new();
        // Bounded by the line limit and read timeouts; 1000 lines is plenty.
        for _ in 0..1000 {
            let line = match self.w.line() {
                Ok(line) => line,
                Err(e) => return Err(self.net(e)),
            };
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                self.broken = true;
                return Err(ChannelError::Fatal(format!("{} does not speak SMTP (it said {line:?})", self.what)));
            };
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                // 421: the server is closing the session.
                self.broken |= code == 421;
                return Ok(Reply { code, lines });
            }
        }
        self.broken = true;
        Err(ChannelError::Fatal(format!("{} sent a reply of more than 1000 lines", self.what)))
    }

    /// Send one command line and read the reply.
    pub fn command(&mut self, line: &str) -> Result<Reply, ChannelError> {
        if let Err(e) = self.w.send(format!("{line}\r\n").as_bytes()) {
            return Err(self.net(e));
        }
        self.reply()
    }

    /// The channel error for a negative reply at `stage`.
    pub fn refused(&self, stage: &str, r: &Reply) -> ChannelError {
        reply_error(&self.what, stage, r, self.retry_ms)
    }

    /// EHLO as `domain`; remembers the capabilities.
    pub fn ehlo(&mut self, domain: &str) -> Result<(), ChannelError> {
        let r = self.command(&format!("EHLO {domain}"))?;
        if r.code != 250 {
            return Err(self.refused("EHLO", &r));
        }
        self.caps = r.lines.iter().skip(1).map(|l| l.trim().to_ascii_uppercase()).collect();
        Ok(())
    }

    /// Whether EHLO listed `keyword`.
    pub fn has(&self, keyword: &str) -> bool {
        self.caps.iter().any(|c| c.split_whitespace().next() == Some(keyword))
    }

    /// SASL mechanisms offered (`AUTH PLAIN LOGIN`, or the old `AUTH=PLAIN`).
    pub fn auth_mechanisms(&self) -> Vec<String> {
        self.caps
            .iter()
            .filter_map(|c| c.strip_prefix("AUTH ").or_else(|| c.strip_prefix("AUTH=")))
            .flat_map(|m| m.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// EHLO, STARTTLS as `mode` asks, EHLO again, and AUTH as `user` (the
    /// secret `password`) when the server offers AUTH.
    pub fn open_session(&mut self, domain: &str, user: &str, mode: StartTls, secure: bool) -> Result<(), ChannelError> {
        self.ehlo(domain)?;
        let mut secure = secure;
        if !secure && mode != StartTls::Off && self.has("STARTTLS") {
            let r = self.command("STARTTLS")?;
            if r.code != 220 {
                return Err(self.refused("STARTTLS", &r));
            }
            if let Err(e) = self.w.start_tls() {
                return Err(self.net(e));
            }
            secure = true;
            self.ehlo(domain)?;
        }
        if !secure && mode == StartTls::Required {
            return Err(ChannelError::InvalidConfig(format!(
                "{} does not offer STARTTLS and config `starttls` is \"required\": use a tls:// URL (port 465) or set starttls = \"auto\"",
                self.what
            )));
        }
        let mechs = self.auth_mechanisms();
        if mechs.is_empty() {
            return Ok(());
        }
        let r = if mechs.iter().any(|m| m == "PLAIN") {
            self.command(&format!("AUTH PLAIN {{{{base64:\0{user}\0{{{{secret:password}}}}}}}}"))?
        } else if mechs.iter().any(|m| m == "LOGIN") {
            let r = self.command("AUTH LOGIN")?;
            if r.code != 334 {
                return Err(self.refused("AUTH LOGIN", &r));
            }
            let r = self.command(&format!("{{{{base64:{user}}}}}"))?;
            if r.code != 334 {
                return Err(self.refused("AUTH LOGIN", &r));
            }
            self.command("{{base64:{{secret:password}}}}")?
        } else {
            return Err(ChannelError::InvalidConfig(format!(
                "{} offers only the SASL mechanisms {} (kata speaks PLAIN and LOGIN)",
                self.what,
                mechs.join(", ")
            )));
        };
        if r.code != 235 {
            return Err(self.refused("AUTH", &r));
        }
        Ok(())
    }

    /// MAIL FROM, RCPT TO each recipient, DATA with `data` (CRLF lines, not
    /// yet dot-stuffed). Returns the server's answer to the final dot.
    pub fn deliver(&mut self, from: &str, to: &[String], data: &str) -> Result<Reply, ChannelError> {
        let r = self.command(&format!("MAIL FROM:<{from}>"))?;
        if r.code != 250 {
            return Err(self.refused("MAIL FROM", &r));
        }
        for rcpt in to {
            let r = self.command(&format!("RCPT TO:<{rcpt}>"))?;
            if r.code != 250 && r.code != 251 {
                return Err(self.refused(&format!("RCPT TO <{rcpt}>"), &r));
            }
        }
        let r = self.command("DATA")?;
        if r.code != 354 {
            return Err(self.refused("DATA", &r));
        }
        if let Err(e) = self.w.send(dot_stuff(data).as_bytes()) {
            return Err(self.net(e));
        }
        let r = self.reply()?;
        if r.code != 250 {
            return Err(self.refused("the end of DATA", &r));
        }
        Ok(r)
    }

    /// RSET: abort the current transaction (after a refused MAIL, RCPT or
    /// DATA), so the session can carry the next message.
    pub fn reset(&mut self) -> Result<(), ChannelError> {
        let r = self.command("RSET")?;
        if r.code != 250 {
            return Err(self.refused("RSET", &r));
        }
        Ok(())
    }

    /// Deliver `mails` (recipient, data) from `from` one after another in
    /// this session, in order; one result per mail. A mail the server
    /// refuses fails alone: RSET, and the next one goes on. What the session
    /// cannot carry any more is not tried and fails with a retryable error:
    /// after a temporary refusal for throttling (421, 4.7.x) every later
    /// mail gets the same [`ChannelError::RateLimited`]; after a broken
    /// connection (or a refused RSET), a [`ChannelError::Network`] error;
    /// and once `out_of_time()` says so (asked before each mail after the
    /// first), a `Network` error too. QUIT at the end when the session is
    /// still up.
    pub fn deliver_each(
        &mut self,
        from: &str,
        mails: &[(&str, &str)],
        mut out_of_time: impl FnMut() -> bool,
    ) -> Vec<Result<Reply, ChannelError>> {
        let mut out = Vec::with_capacity(mails.len());
        let mut stop: Option<ChannelError> = None;
        for (i, (to, data)) in mails.iter().enumerate() {
            if stop.is_none() && i > 0 && out_of_time() {
                stop = Some(ChannelError::Network(format!("{}: not sent: the batch ran out of time before this message", self.what)));
            }
            if let Some(e) = &stop {
                out.push(Err(e.clone()));
                continue;
            }
            let result = self.deliver(from, &[to.to_string()], data);
            if let Err(e) = &result {
                if let ChannelError::RateLimited(_) = e {
                    stop = Some(e.clone());
                } else if !self.usable() || self.reset().is_err() {
                    stop = Some(ChannelError::Network(format!(
                        "{}: not sent: the session broke off at an earlier message of the batch",
                        self.what
                    )));
                }
            }
            out.push(result);
        }
        if self.usable() {
            self.quit();
        }
        out
    }

    /// QUIT (errors ignored).
    pub fn quit(&mut self) {
        let _ = self.command("QUIT");
    }
}

/// Map a negative reply to what the host should do: temporary refusals are
/// retried (421 and 4.7.x — throttling, greylisting — after `retry_ms`,
/// others with backoff), 530/534/535 are refused credentials, the rest of
/// 5xx is permanent.
pub fn reply_error(what: &str, stage: &str, r: &Reply, retry_ms: u64) -> ChannelError {
    let text = format!("{what} answered {} {} to {stage}", r.code, r.text());
    if r.positive() {
        return ChannelError::Fatal(format!("{text} (unexpected)"));
    }
    let enhanced = r.lines.first().map(|l| l.trim_start().starts_with("4.7.")).unwrap_or(false);
    match r.code {
        421 => ChannelError::RateLimited(retry_ms),
        400..=499 if enhanced => ChannelError::RateLimited(retry_ms),
        400..=499 => ChannelError::Network(text),
        530 | 534 | 535 => ChannelError::AuthFailed(format!("{text} (check config `username` and the secret `password`)")),
        _ => ChannelError::Fatal(text),
    }
}

/// Dot-stuff a message for DATA (a line starting with `.` gets another) and
/// end it with `CRLF . CRLF`. Bare `\n` become `\r\n`.
pub fn dot_stuff(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    for line in data.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    // `split` yields a last empty piece after a final newline.
    if data.ends_with('\n') {
        out.truncate(out.len() - 2);
    }
    out.push_str(".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::script::Script;

    const WHAT: &str = "SMTP server tcp://x:587";

    #[test]
    fn starttls_auth_plain_and_delivery() {
        let server = "220 mx ESMTP\r\n250-mx hello\r\n250-PIPELINING\r\n250 STARTTLS\r\n220 go ahead\r\n\
250-mx hello\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n235 2.7.0 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 queued as ABC\r\n221 bye\r\n";
        let mut s = Smtp::greet(Script::new(server), 100, WHAT, 60_000).unwrap();
        s.open_session("example.org", "bot@example.org", StartTls::Auto, false).unwrap();
        let r = s.deliver("bot@example.org", &["ann@example.org".into()], "Subject: hi\r\n\r\n.leading dot\r\nend\r\n").unwrap();
        assert_eq!(r.text(), "2.0.0 queued as ABC");
        s.quit();
        assert!(s.wire().inner().tls);
        assert_eq!(
            s.wire().inner().sent(),
            "EHLO example.org\r\nSTARTTLS\r\nEHLO example.org\r\nAUTH PLAIN {{base64:\0bot@example.org\0{{secret:password}}}}\r\n\
MAIL FROM:<bot@example.org>\r\nRCPT TO:<ann@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..leading dot\r\nend\r\n.\r\nQUIT\r\n"
        );
    }

    #[test]
    fn auth_login_and_no_auth_when_not_offered() {
        let server = "220 mx\r\n250-mx\r\n250 AUTH=LOGIN\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 ok\r\n";
        let mut s = Smtp::greet(Script::new(server), 100, WHAT, 1).unwrap();
        s.open_session("d", "bot", StartTls::Off, false).unwrap();
        assert!(s.wire().inner().sent().ends_with("AUTH LOGIN\r\n{{base64:bot}}\r\n{{base64:{{secret:password}}}}\r\n"));

        let mut s = Smtp::greet(Script::new("220 mx\r\n250 mx\r\n"), 100, WHAT, 1).unwrap();
        s.open_session("d", "bot", StartTls::Auto, false).unwrap();
        assert_eq!(s.wire().inner().sent(), "EHLO d\r\n");
        let mut s = Smtp::greet(Script::new("220 mx\r\n250 mx\r\n"), 100, WHAT, 1).unwrap();
        assert!(matches!(s.open_session("d", "bot", StartTls::Required, false), Err(ChannelError::InvalidConfig(_))));
    }

    #[test]
    fn reply_codes_map_to_errors() {
        let r = |code, text: &str| Reply { code, lines: vec![text.to_string()] };
        assert!(matches!(reply_error(WHAT, "AUTH", &r(535, "5.7.8 bad credentials"), 1), ChannelError::AuthFailed(_)));
        assert_eq!(reply_error(WHAT, "DATA", &r(451, "4.7.1 slow down"), 2000), ChannelError::RateLimited(2000));
        assert_eq!(reply_error(WHAT, "MAIL", &r(421, "busy"), 7), ChannelError::RateLimited(7));
        assert!(matches!(reply_error(WHAT, "RCPT", &r(450, "mailbox busy"), 1), ChannelError::Network(_)));
        assert!(matches!(reply_error(WHAT, "RCPT", &r(550, "no such user"), 1), ChannelError::Fatal(_)));
        let mut s = Smtp::greet(Script::new("220 mx\r\n250 mx\r\n550 5.1.1 no such user\r\n"), 100, WHAT, 1).unwrap();
        s.ehlo("d").unwrap();
        match s.deliver("a@b", &["x@y".into()], "x") {
            Err(ChannelError::Fatal(t)) => assert!(t.contains("550") && t.contains("MAIL FROM"), "{t}"),
            other => panic!("{other:?}"),
        }
    }

    /// Three mails in one session: the second recipient is refused at RCPT
    /// (550): only it fails; RSET, and the third goes out.
    #[test]
    fn one_session_for_several_mails_a_refused_recipient_fails_alone() {
        let server = "220 mx\r\n250 mx\r\n\
250 ok\r\n250 ok\r\n354 go\r\n250 queued 1\r\n\
250 ok\r\n550 5.1.1 no such user\r\n250 reset\r\n\
250 ok\r\n250 ok\r\n354 go\r\n250 queued 3\r\n221 bye\r\n";
        let mut s = Smtp::greet(Script::new(server), 100, WHAT, 1).unwrap();
        s.ehlo("d").unwrap();
        let mails = [("ann@x", "one\r\n"), ("nobody@x", "two\r\n"), ("bob@x", "three\r\n")];
        let r = s.deliver_each("bot@x", &mails, || false);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].as_ref().unwrap().text(), "queued 1");
        match &r[1] {
            Err(ChannelError::Fatal(t)) => assert!(t.contains("550") && t.contains("RCPT TO <nobody@x>"), "{t}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r[2].as_ref().unwrap().text(), "queued 3");
        assert_eq!(
            s.wire().inner().sent(),
            "EHLO d\r\nMAIL FROM:<bot@x>\r\nRCPT TO:<ann@x>\r\nDATA\r\none\r\n.\r\n\
MAIL FROM:<bot@x>\r\nRCPT TO:<nobody@x>\r\nRSET\r\n\
MAIL FROM:<bot@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\nthree\r\n.\r\nQUIT\r\n"
        );
    }

    /// Throttling (451 4.7.1) stops the batch: the rest are not tried and
    /// wait the same pause; a broken connection fails the rest as network
    /// errors; so does running out of time.
    #[test]
    fn a_batch_stops_at_throttling_a_broken_connection_or_its_time() {
        let mails = [("a@x", "1\r\n"), ("b@x", "2\r\n"), ("c@x", "3\r\n")];
        let server =
            "220 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n451 4.7.1 slow down\r\n221 bye\r\n";
        let mut s = Smtp::greet(Script::new(server), 100, WHAT, 2000).unwrap();
        let r = s.deliver_each("bot@x", &mails, || false);
        assert!(r[0].is_ok(), "{r:?}");
        assert_eq!(r[1], Err(ChannelError::RateLimited(2000)));
        assert_eq!(r[2], Err(ChannelError::RateLimited(2000)));
        assert!(!s.wire().inner().sent().contains("<c@x>") && s.wire().inner().sent().ends_with("QUIT\r\n"));

        // The server hangs up after the first mail's MAIL FROM of the second.
        let server = "220 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n250 ok\r\n";
        let mut s = Smtp::greet(Script::new(server), 100, WHAT, 1).unwrap();
        let r = s.deliver_each("bot@x", &mails, || false);
        assert!(r[0].is_ok(), "{r:?}");
        assert!(matches!(&r[1], Err(ChannelError::Network(t)) if t.contains("closed")), "{r:?}");
        assert!(matches!(&r[2], Err(ChannelError::Network(t)) if t.contains("broke off")), "{r:?}");
        assert!(!s.usable() && !s.wire().inner().sent().contains("QUIT"));

        let server = "220 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n";
        let mut s = Smtp::greet(Script::new(server), 100, WHAT, 1).unwrap();
        let r = s.deliver_each("bot@x", &mails, || true);
        assert!(r[0].is_ok(), "{r:?}");
        assert!(matches!(&r[1], Err(ChannelError::Network(t)) if t.contains("out of time")), "{r:?}");
        assert_eq!(r[1], r[2]);
        assert!(s.wire().inner().sent().ends_with(".\r\nQUIT\r\n"));
    }

    #[test]
    fn multi_line_replies_and_garbage() {
        let mut s = Smtp::greet(Script::new("220-one\r\n220-two\r\n220 three\r\n"), 100, WHAT, 1).unwrap();
        let _ = &mut s;
        assert!(matches!(Smtp::greet(Script::new("* OK IMAP\r\n"), 100, WHAT, 1), Err(ChannelError::Fatal(_))));
        assert!(matches!(Smtp::greet(Script::new("554 go away\r\n"), 100, WHAT, 1), Err(ChannelError::Fatal(_))));
        assert!(matches!(Smtp::greet(Script::new(""), 100, WHAT, 1), Err(ChannelError::Network(_))));
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff("a\n.b\r\n..c\r\n"), "a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff("no newline"), "no newline\r\n.\r\n");
        assert_eq!(dot_stuff("."), "..\r\n.\r\n");
    }
}
