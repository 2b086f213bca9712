//! The IRC protocol as the plugin needs it (RFC 1459/2812 with IRCv3 message
//! tags): parsing a line, and turning lines into replies and kata messages.
//! Nothing here touches the host, so it is unit-tested natively.

use kata_sdk::{ConversationKind, Frame, Message};

/// The longest line IRC allows, with its `\r\n`.
pub const MAX_LINE: usize = 512;

/// One parsed IRC line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// IRCv3 tags (`@msgid=…;time=…`), raw.
    pub tags: Option<&'a str>,
    /// The prefix without its `:` (`nick!user@host` or a server name).
    pub prefix: Option<&'a str>,
    /// The command or numeric, e.g. `PRIVMSG`, `001`.
    pub command: &'a str,
    /// The parameters, the trailing one (after ` :`) last.
    pub params: Vec<&'a str>,
}

/// Parse one line (without its line end). None for an empty or malformed line.
pub fn parse(line: &str) -> Option<Line<'_>> {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    let mut tags = None;
    if let Some(r) = rest.strip_prefix('@') {
        let (t, r) = r.split_once(' ')?;
        tags = Some(t);
        rest = r.trim_start_matches(' ');
    }
    let mut prefix = None;
    if let Some(r) = rest.strip_prefix(':') {
        let (p, r) = r.split_once(' ')?;
        prefix = Some(p);
        rest = r.trim_start_matches(' ');
    }
    let (command, mut rest) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    if command.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                params.push(p);
                rest = r;
            }
            None => {
                params.push(rest);
                break;
            }
        }
    }
    Some(Line { tags, prefix, command, params })
}

impl Line<'_> {
    /// The nick of the prefix (`nick` of `nick!user@host`).
    pub fn nick(&self) -> Option<&str> {
        let p = self.prefix?;
        let nick = p.split(['!', '@']).next()?;
        (!nick.is_empty()).then_some(nick)
    }

    /// The value of IRCv3 tag `key`, unescaped enough for ids.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags?.split(';').find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            _ => None,
        })
    }
}

/// Whether `target` names a channel rather than a nick.
pub fn is_channel(target: &str) -> bool {
    target.starts_with(['#', '&', '+', '!'])
}

/// IRC's case mapping (rfc1459): `[]\~` are the upper case of `{}|^`.
pub fn irc_eq(a: &str, b: &str) -> bool {
    let fold = |c: char| match c {
        '[' => '{',
        ']' => '}',
        '\\' => '|',
        '~' => '^',
        c => c.to_ascii_lowercase(),
    };
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// If `text` addresses `nick` (`nick: …`, `nick, …`, or `@nick` / the nick as
/// a word anywhere), the text with a leading address removed.
pub fn addressed<'t>(text: &'t str, nick: &str) -> Option<&'t str> {
    let lead = text.trim_start().trim_start_matches('@');
    if lead.len() > nick.len() && lead.is_char_boundary(nick.len()) && irc_eq(&lead[..nick.len()], nick) {
        let after = &lead[nick.len()..];
        if let Some(rest) = after.strip_prefix([':', ',']) {
            return Some(rest.trim_start());
        }
    }
    let word = |c: char| c.is_alphanumeric() || "-_[]\\`^{}|".contains(c);
    let mentioned = text.split(|c: char| !word(c)).any(|w| !w.is_empty() && irc_eq(w, nick));
    mentioned.then_some(text)
}

/// What the plugin does with one line of the stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaction {
    /// Lines to write back.
    pub replies: Vec<String>,
    /// A message for the agent.
    pub message: Option<Message>,
    /// The nick to use from now on (after the server refused ours).
    pub new_nick: Option<String>,
}

/// The session state the reaction depends on.
pub struct Session<'a> {
    /// Our current nick.
    pub nick: &'a str,
    /// Channels to join once registered.
    pub channels: &'a [String],
    /// Makes message ids unique: a counter and the time.
    pub seq: u64,
    /// The time now (ms since the Unix epoch).
    pub now_ms: u64,
}

/// React to one line from the server.
pub fn react(line: &str, s: &Session<'_>) -> Reaction {
    let mut r = Reaction::default();
    let Some(l) = parse(line) else { return r };
    match l.command.to_ascii_uppercase().as_str() {
        "PING" => {
            let token = l.params.first().copied().unwrap_or("");
            r.replies.push(format!("PONG :{token}"));
        }
        // Registered: now join.
        "001" if !s.channels.is_empty() => r.replies.push(format!("JOIN {}", s.channels.join(","))),
        // Nick in use or erroneous: try another.
        "433" | "436" | "437" => {
            let base: String = s.nick.chars().take(28).collect();
            let next = format!("{base}_");
            r.replies.push(format!("NICK {next}"));
            r.new_nick = Some(next);
        }
        "PRIVMSG" => r.message = privmsg(&l, s),
        _ => {}
    }
    r
}

fn privmsg(l: &Line<'_>, s: &Session<'_>) -> Option<Message> {
    let sender = l.nick()?;
    let (target, text) = match l.params.as_slice() {
        [target, text, ..] => (*target, *text),
        _ => return None,
    };
    // CTCP (\x01VERSION\x01, ACTION…) is not conversation.
    if text.starts_with('\u{1}') || irc_eq(sender, s.nick) {
        return None;
    }
    let (conversation, kind, mentioned, text) = if is_channel(target) {
        match addressed(text, s.nick) {
            Some(rest) => (target, ConversationKind::Group, true, rest),
            None => (target, ConversationKind::Group, false, text),
        }
    } else {
        // A query: the conversation is the other person.
        (sender, ConversationKind::Direct, true, text)
    };
    let id = match l.tag("msgid") {
        Some(m) => format!("{conversation}:{m}"),
        None => format!("{conversation}:{sender}:{}:{}", s.now_ms, s.seq),
    };
    let mut m = Message::text(id, conversation, sender, text);
    m.sender_name = Some(sender.to_string());
    m.timestamp_ms = s.now_ms;
    m.conversation_kind = kind;
    m.mentioned = mentioned;
    Some(m)
}

/// The PRIVMSG lines that deliver `text` to `target`: one per line of text,
/// each cut to fit IRC's 512-byte limit (on a character boundary).
pub fn privmsg_lines(target: &str, text: &str) -> Vec<Frame> {
    // Leave room for the server's `:nick!user@host ` prefix on relay.
    let room = MAX_LINE.saturating_sub(2 + "PRIVMSG  :".len() + target.len() + 100).max(16);
    let mut out = Vec::new();
    for line in text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()) {
        let mut rest = line;
        while !rest.is_empty() {
            let mut cut = rest.len().min(room);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(Frame::text(format!("PRIVMSG {target} :{}", &rest[..cut])));
            rest = &rest[cut..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session<'a>(channels: &'a [String]) -> Session<'a> {
        Session { nick: "kata", channels, seq: 7, now_ms: 1000 }
    }

    #[test]
    fn parses_prefix_command_params_and_tags() {
        let l = parse("@msgid=abc;time=x :ann!a@h PRIVMSG #k :hello there :)").unwrap();
        assert_eq!(l.tag("msgid"), Some("abc"));
        assert_eq!(l.nick(), Some("ann"));
        assert_eq!((l.command, l.params.as_slice()), ("PRIVMSG", ["#k", "hello there :)"].as_slice()));
        let l = parse("PING :irc.example.org").unwrap();
        assert_eq!((l.prefix, l.command, l.params.as_slice()), (None, "PING", ["irc.example.org"].as_slice()));
        let l = parse(":srv 001 kata :Welcome   ").unwrap();
        assert_eq!(l.params, ["kata", "Welcome   "]);
        let l = parse(":srv MODE kata +i").unwrap();
        assert_eq!(l.params, ["kata", "+i"]);
        assert_eq!(parse(""), None);
        assert_eq!(parse(":only-prefix"), None);
        assert_eq!(parse("QUIT").unwrap().params, Vec::<&str>::new());
    }

    #[test]
    fn ping_pong_join_and_nick_collisions() {
        let chans = vec!["#kata".to_string(), "#b".to_string()];
        let s = session(&chans);
        assert_eq!(react("PING :tok 1", &s).replies, ["PONG :tok 1"]);
        assert_eq!(react(":srv 001 kata :Welcome", &s).replies, ["JOIN #kata,#b"]);
        let r = react(":srv 433 * kata :Nickname is already in use", &s);
        assert_eq!((r.replies.as_slice(), r.new_nick.as_deref()), (["NICK kata_".to_string()].as_slice(), Some("kata_")));
        assert_eq!(react(":srv NOTICE kata :hi", &s), Reaction::default());
    }

    #[test]
    fn channel_messages_are_groups_mentioned_when_addressed() {
        let s = session(&[]);
        let m = react(":ann!a@h PRIVMSG #k :kata: what time is it?", &s).message.unwrap();
        assert_eq!((m.conversation.as_str(), m.sender.as_str(), m.text.as_str()), ("#k", "ann", "what time is it?"));
        assert_eq!((m.conversation_kind, m.mentioned), (ConversationKind::Group, true));
        assert_eq!(m.id, "#k:ann:1000:7");
        let m = react(":ann!a@h PRIVMSG #k :ask KATA about it", &s).message.unwrap();
        assert!(m.mentioned);
        assert_eq!(m.text, "ask KATA about it");
        let m = react(":ann!a@h PRIVMSG #k :katana is sharp", &s).message.unwrap();
        assert_eq!((m.conversation_kind, m.mentioned), (ConversationKind::Group, false));
        let m = react("@msgid=x1 :ann!a@h PRIVMSG #k :@kata, hi", &s).message.unwrap();
        assert_eq!((m.id.as_str(), m.text.as_str()), ("#k:x1", "hi"));
    }

    #[test]
    fn queries_are_direct_and_ctcp_and_own_lines_ignored() {
        let s = session(&[]);
        let m = react(":ann!a@h PRIVMSG kata :hello", &s).message.unwrap();
        assert_eq!((m.conversation.as_str(), m.conversation_kind, m.mentioned), ("ann", ConversationKind::Direct, true));
        assert_eq!(react(":ann!a@h PRIVMSG kata :\u{1}VERSION\u{1}", &s).message, None);
        assert_eq!(react(":kata!k@h PRIVMSG #k :echo", &s).message, None);
        assert_eq!(react(":srv PRIVMSG #k :no nick", &s).message.map(|m| m.sender), Some("srv".to_string()));
    }

    #[test]
    fn irc_case_mapping() {
        assert!(irc_eq("Kata[1]", "kata{1}"));
        assert!(!irc_eq("kata", "kat"));
    }

    #[test]
    fn sends_are_privmsg_lines_within_the_limit() {
        let f = privmsg_lines("#k", "one\r\ntwo\n\n");
        assert_eq!(f, [Frame::text("PRIVMSG #k :one"), Frame::text("PRIVMSG #k :two")]);
        let long = "é".repeat(400);
        let f = privmsg_lines("ann", &long);
        assert!(f.len() > 1);
        for frame in &f {
            let Frame::Text(t) = frame else { panic!("text") };
            assert!(t.len() + 2 <= MAX_LINE, "{}", t.len());
        }
        let joined: String = f.iter().map(|fr| fr.as_text().unwrap().trim_start_matches("PRIVMSG ann :")).collect();
        assert_eq!(joined, long);
        assert!(privmsg_lines("#k", "").is_empty());
    }
}
