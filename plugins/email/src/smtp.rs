//! An SMTP submission client (RFC 5321, 3207, 4954): greeting, EHLO and its
//! capabilities, STARTTLS when offered, AUTH PLAIN or LOGIN when offered,
//! MAIL FROM / RCPT TO / DATA with dot-stuffing, QUIT; and the mapping of
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
}

impl<T: Transport> Smtp<T> {
    /// Read the greeting (220) on a fresh connection.
    pub fn greet(t: T, timeout_ms: u32, what: &str, retry_ms: u64) -> Result<Self, ChannelError> {
        let mut s = Smtp { w: Wire::new(t, timeout_ms), caps: Vec::new(), what: what.to_string(), retry_ms };
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

    fn net(&self, e: NetError) -> ChannelError {
        e.channel(&self.what)
    }

    /// Read one reply (all its lines).
    pub fn reply(&mut self) -> Result<Reply, ChannelError> {
        let mut lines = Vec::new();
        // Bounded by the line limit and read timeouts; 1000 lines is plenty.
        for _ in 0..1000 {
            let line = self.w.line().map_err(|e| self.net(e))?;
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                return Err(ChannelError::Fatal(format!("{} does not speak SMTP (it said {line:?})", self.what)));
            };
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
        }
        Err(ChannelError::Fatal(format!("{} sent a reply of more than 1000 lines", self.what)))
    }

    /// Send one command line and read the reply.
    pub fn command(&mut self, line: &str) -> Result<Reply, ChannelError> {
        self.w.send(format!("{line}\r\n").as_bytes()).map_err(|e| self.net(e))?;
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
            self.w.start_tls().map_err(|e| self.net(e))?;
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
        self.w.send(dot_stuff(data).as_bytes()).map_err(|e| self.net(e))?;
        let r = self.reply()?;
        if r.code != 250 {
            return Err(self.refused("the end of DATA", &r));
        }
        Ok(r)
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
