//! The Discord Gateway protocol as a state machine over text frames: what
//! to answer to HELLO, when to heartbeat, when to IDENTIFY or RESUME, and
//! which dispatches carry messages. Nothing here touches the host, so it is
//! unit-tested natively; the plugin keeps [`Saved`] in host state.
//!
//! Shapes and rules from Discord's documentation
//! (github.com/discord/discord-api-docs):
//! - <https://discord.com/developers/docs/events/gateway> — connecting with
//!   `?v=10&encoding=json`; Hello (op 10, `heartbeat_interval`); the first
//!   heartbeat after `heartbeat_interval * jitter`, then one every interval
//!   with `d` = the last sequence number (or null); Heartbeat ACK (op 11),
//!   and with no ACK between two heartbeats the connection is "zombied": close
//!   it with a code other than 1000/1001 and resume; Discord may ask for a
//!   heartbeat (op 1); Identify (op 2) with `token`, `intents`,
//!   `properties`; Ready (`session_id`, `resume_gateway_url`, `user`);
//!   Resume (op 6, `token`, `session_id`, `seq`) on a new connection to
//!   `resume_gateway_url`, after which the missed events are replayed and a
//!   RESUMED dispatch follows; Reconnect (op 7) → reconnect and resume;
//!   Invalid Session (op 9) with `d` = whether the session may be resumed
//!   (false: identify afresh on a new connection to the Get Gateway Bot URL);
//! - <https://discord.com/developers/docs/events/gateway-events> — payload
//!   structure `{op, d, s, t}`, where `s` and `t` are null unless `op` is 0;
//! - <https://discord.com/developers/docs/topics/opcodes-and-status-codes> —
//!   the opcodes, and close codes such as 4004 (authentication failed) and
//!   4014 (disallowed intents) after which reconnecting does not help.
//!
//! The host owns the socket and only tells the plugin frames, not close
//! codes, so a session that keeps closing after IDENTIFY without READY
//! (4004, 4013, 4014) is noticed by counting IDENTIFYs: see [`Gateway::plan`].

use kata_sdk::{ChannelError, Frame};
use serde_json::{Value, json};

/// GUILD_MESSAGES (1 << 9) | DIRECT_MESSAGES (1 << 12) | MESSAGE_CONTENT
/// (1 << 15, privileged: enable it in the Developer Portal).
pub const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);

/// The API version and encoding every gateway URL is opened with.
pub const QUERY: &str = "v=10&encoding=json";

/// IDENTIFYs without READY before the plugin stops and says why.
const MAX_UNANSWERED_IDENTIFIES: u32 = 2;
/// RESUMEs without RESUMED before the plugin identifies afresh.
const MAX_RESUMES: u32 = 2;

/// What outlives a connection (kept in host state as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Saved {
    /// The session to resume, from READY.
    pub session_id: Option<String>,
    /// Where to resume it, from READY.
    pub resume_url: Option<String>,
    /// The last sequence number the host has stored the messages of.
    pub seq: Option<u64>,
    /// The bot's user id, from READY (messages from it are its own).
    pub bot_id: Option<String>,
    /// IDENTIFYs sent since the last READY.
    pub identifies: u32,
    /// RESUMEs tried since the last RESUMED or READY.
    pub resumes: u32,
}

impl Saved {
    /// The stored form.
    pub fn to_json(&self) -> String {
        json!({
            "session_id": self.session_id, "resume_url": self.resume_url, "seq": self.seq,
            "bot_id": self.bot_id, "identifies": self.identifies, "resumes": self.resumes,
        })
        .to_string()
    }

    /// Parse the stored form (anything unreadable is a fresh start).
    pub fn from_json(text: &str) -> Saved {
        let Ok(v) = serde_json::from_str::<Value>(text) else { return Saved::default() };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        Saved {
            session_id: s("session_id"),
            resume_url: s("resume_url"),
            seq: n("seq"),
            bot_id: s("bot_id"),
            identifies: n("identifies").unwrap_or(0) as u32,
            resumes: n("resumes").unwrap_or(0) as u32,
        }
    }

    fn forget_session(&mut self) {
        self.session_id = None;
        self.resume_url = None;
        self.seq = None;
        self.resumes = 0;
    }
}

/// One gateway connection's state, plus what outlives it.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    /// What outlives the connection.
    pub saved: Saved,
    /// The last sequence number received on this connection (or saved).
    pub seq: Option<u64>,
    resuming: bool,
    interval_ms: Option<u64>,
    next_beat_ms: Option<u64>,
    awaiting_ack: bool,
}

/// What one frame asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Frames to send back (IDENTIFY, RESUME, a requested heartbeat).
    pub replies: Vec<Frame>,
    /// The `d` of a MESSAGE_CREATE dispatch.
    pub message: Option<Value>,
    /// The `d` of an INTERACTION_CREATE dispatch (a button press; sent
    /// whatever the intents).
    pub interaction: Option<Value>,
}

impl Gateway {
    /// A gateway with `saved` from host state.
    pub fn new(saved: Saved) -> Gateway {
        let seq = saved.seq;
        Gateway { saved, seq, ..Gateway::default() }
    }

    /// Plan the next connection, given the URL Get Gateway Bot returned:
    /// resume the saved session at its `resume_gateway_url` (at most
    /// [`MAX_RESUMES`] times in a row), otherwise start a new session.
    ///
    /// After [`MAX_UNANSWERED_IDENTIFIES`] IDENTIFYs without READY it fails
    /// once with `invalid-config` (the host then waits before asking again):
    /// Discord closes such connections for a bad token (4004) or an intent
    /// the app may not use (4013, 4014 — MESSAGE_CONTENT not enabled).
    pub fn plan(&mut self, gateway_url: &str) -> Result<String, ChannelError> {
        self.interval_ms = None;
        self.next_beat_ms = None;
        self.awaiting_ack = false;
        if self.saved.identifies >= MAX_UNANSWERED_IDENTIFIES {
            self.saved.identifies = 0;
            return Err(ChannelError::InvalidConfig(
                "Discord closed the gateway connection after IDENTIFY twice without READY: check the `bot_token` secret and \
                 enable the MESSAGE CONTENT privileged intent for the bot (Developer Portal → Bot → Privileged Gateway Intents); \
                 kata's log shows the close code"
                    .into(),
            ));
        }
        let url = match (&self.saved.session_id, &self.saved.resume_url) {
            (Some(_), Some(resume)) if self.saved.resumes < MAX_RESUMES => {
                self.saved.resumes += 1;
                self.resuming = true;
                resume.clone()
            }
            _ => {
                self.saved.forget_session();
                self.resuming = false;
                gateway_url.to_string()
            }
        };
        self.seq = self.saved.seq;
        Ok(with_query(&url))
    }

    /// Whether this connection resumes a session (else it identifies).
    pub fn resuming(&self) -> bool {
        self.resuming
    }

    /// The host's heartbeat tick: a heartbeat when one is due. No ACK since
    /// the previous heartbeat means a zombied connection: an error, so the
    /// host drops it (without a close frame, which keeps the session
    /// resumable) and the next connection resumes.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<Frame>, ChannelError> {
        let (Some(interval), Some(due)) = (self.interval_ms, self.next_beat_ms) else { return Ok(Vec::new()) };
        if now_ms < due {
            return Ok(Vec::new());
        }
        if self.awaiting_ack {
            return Err(ChannelError::Network("no Heartbeat ACK since the last heartbeat (a zombied gateway connection); resuming".into()));
        }
        self.awaiting_ack = true;
        self.next_beat_ms = Some(now_ms + interval);
        Ok(vec![self.heartbeat()])
    }

    /// A heartbeat carrying the last sequence number.
    pub fn heartbeat(&self) -> Frame {
        Frame::text(json!({ "op": 1, "d": self.seq }).to_string())
    }

    /// Handle one gateway payload. Errors end the connection: Reconnect (op
    /// 7) and Invalid Session (op 9) ask for a new one.
    pub fn handle(&mut self, text: &str, now_ms: u64) -> Result<Step, ChannelError> {
        let mut step = Step::default();
        let Ok(v) = serde_json::from_str::<Value>(text) else { return Ok(step) };
        let d = v.get("d").unwrap_or(&Value::Null);
        match v.get("op").and_then(Value::as_u64) {
            Some(10) => {
                let interval = d.get("heartbeat_interval").and_then(Value::as_u64).filter(|i| *i > 0).unwrap_or(41_250);
                self.interval_ms = Some(interval);
                // The first heartbeat after interval * jitter, jitter in [0, 1).
                self.next_beat_ms = Some(now_ms + interval * (now_ms % 997) / 997);
                self.awaiting_ack = false;
                step.replies.push(if self.resuming { self.resume_frame() } else { self.identify_frame() });
            }
            Some(11) => self.awaiting_ack = false,
            Some(1) => step.replies.push(self.heartbeat()),
            Some(7) => return Err(ChannelError::Network("Discord asked to reconnect (opcode 7 Reconnect); resuming".into())),
            Some(9) => {
                let resumable = d.as_bool() == Some(true);
                if !resumable {
                    self.saved.forget_session();
                }
                return Err(ChannelError::Network(format!(
                    "Discord invalidated the gateway session (opcode 9 Invalid Session); {}",
                    if resumable { "resuming" } else { "identifying afresh" }
                )));
            }
            Some(0) => {
                if let Some(s) = v.get("s").and_then(Value::as_u64) {
                    self.seq = Some(s);
                }
                match v.get("t").and_then(Value::as_str) {
                    Some("READY") => {
                        let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
                        self.saved.session_id = text("session_id");
                        self.saved.resume_url = text("resume_gateway_url");
                        self.saved.bot_id = d.get("user").and_then(|u| u.get("id")).and_then(Value::as_str).map(str::to_string);
                        self.saved.seq = self.seq;
                        self.saved.identifies = 0;
                        self.saved.resumes = 0;
                    }
                    Some("RESUMED") => self.saved.resumes = 0,
                    Some("MESSAGE_CREATE") => step.message = Some(d.clone()),
                    Some("INTERACTION_CREATE") => step.interaction = Some(d.clone()),
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(step)
    }

    fn identify_frame(&mut self) -> Frame {
        self.saved.identifies += 1;
        Frame::text(
            json!({
                "op": 2,
                "d": {
                    "token": "{{secret:bot_token}}",
                    "intents": INTENTS,
                    "properties": { "os": "kata", "browser": "kata", "device": "kata" },
                },
            })
            .to_string(),
        )
    }

    fn resume_frame(&self) -> Frame {
        Frame::text(
            json!({
                "op": 6,
                "d": { "token": "{{secret:bot_token}}", "session_id": self.saved.session_id, "seq": self.seq.unwrap_or(0) },
            })
            .to_string(),
        )
    }
}

/// `url` with the version and encoding query (kept when it has a query).
pub fn with_query(url: &str) -> String {
    if url.contains('?') { url.to_string() } else { format!("{}/?{QUERY}", url.trim_end_matches('/')) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: &Frame) -> Value {
        serde_json::from_str(f.as_text().unwrap()).unwrap()
    }

    fn ready(gw: &mut Gateway) {
        let r = r#"{"op":0,"s":1,"t":"READY","d":{"v":10,"user":{"id":"80351110224678912","username":"kata","bot":true},"guilds":[],
            "session_id":"abc123","resume_gateway_url":"wss://gateway-us-east1-b.discord.gg","shard":[0,1],"application":{"id":"1","flags":0}}}"#;
        assert_eq!(gw.handle(r, 0).unwrap(), Step::default());
    }

    #[test]
    fn a_new_session_identifies_heartbeats_and_keeps_ready() {
        let mut gw = Gateway::new(Saved::default());
        assert_eq!(gw.plan("wss://gateway.discord.gg").unwrap(), "wss://gateway.discord.gg/?v=10&encoding=json");
        assert!(gw.tick(5).unwrap().is_empty(), "no heartbeat before HELLO");
        let step = gw.handle(r#"{"op":10,"d":{"heartbeat_interval":45000},"s":null,"t":null}"#, 1000).unwrap();
        let id = text(&step.replies[0]);
        assert_eq!(id["op"], 2);
        assert_eq!(id["d"]["token"], "{{secret:bot_token}}");
        assert_eq!(id["d"]["intents"], 37376);
        assert_eq!(gw.saved.identifies, 1);
        // The first heartbeat comes within one interval, with d = null.
        let first = (1000..=46_000).step_by(500).find_map(|t| gw.tick(t).unwrap().pop().map(|f| (t, f))).unwrap();
        assert_eq!(text(&first.1), json!({"op": 1, "d": null}));
        ready(&mut gw);
        assert_eq!(gw.saved.session_id.as_deref(), Some("abc123"));
        assert_eq!(gw.saved.bot_id.as_deref(), Some("80351110224678912"));
        assert_eq!((gw.saved.seq, gw.saved.identifies), (Some(1), 0));
        // Not due yet; then due, but the last heartbeat was never acknowledged.
        assert!(gw.tick(first.0 + 44_000).unwrap().is_empty());
        assert!(matches!(gw.tick(first.0 + 45_000), Err(ChannelError::Network(m)) if m.contains("zombied")));
        // Acknowledged: the next heartbeat carries the last sequence number.
        gw.handle(r#"{"op":11}"#, 0).unwrap();
        assert_eq!(text(&gw.tick(first.0 + 45_000).unwrap()[0]), json!({"op": 1, "d": 1}));
        // A heartbeat request is answered at once.
        assert_eq!(text(&gw.handle(r#"{"op":1,"d":null}"#, 0).unwrap().replies[0]), json!({"op": 1, "d": 1}));
    }

    #[test]
    fn dispatches_track_the_sequence_and_carry_messages() {
        let mut gw = Gateway::new(Saved::default());
        gw.plan("wss://g").unwrap();
        ready(&mut gw);
        let step = gw.handle(r#"{"op":0,"s":2,"t":"MESSAGE_CREATE","d":{"id":"1","channel_id":"2","content":"hi"}}"#, 0).unwrap();
        assert_eq!(step.message.unwrap()["content"], "hi");
        assert_eq!((gw.seq, gw.saved.seq), (Some(2), Some(1)), "the saved seq moves only when the plugin says the message is stored");
        assert_eq!(gw.handle(r#"{"op":0,"s":3,"t":"TYPING_START","d":{}}"#, 0).unwrap(), Step::default());
        assert_eq!(gw.seq, Some(3));
        let step = gw.handle(r#"{"op":0,"s":4,"t":"INTERACTION_CREATE","d":{"id":"5","type":3}}"#, 0).unwrap();
        assert_eq!((step.message, step.interaction.unwrap()["id"].clone()), (None, json!("5")));
    }

    #[test]
    fn reconnects_resume_and_invalid_sessions_start_again() {
        let mut gw = Gateway::new(Saved::default());
        gw.plan("wss://g").unwrap();
        ready(&mut gw);
        gw.seq = Some(41);
        gw.saved.seq = Some(41);
        assert!(matches!(gw.handle(r#"{"op":7,"d":null}"#, 0), Err(ChannelError::Network(m)) if m.contains("opcode 7")));
        // The next connection resumes at the resume URL with the saved seq.
        let mut gw = Gateway::new(Saved::from_json(&gw.saved.to_json()));
        assert_eq!(gw.plan("wss://g").unwrap(), "wss://gateway-us-east1-b.discord.gg/?v=10&encoding=json");
        assert!(gw.resuming());
        let step = gw.handle(r#"{"op":10,"d":{"heartbeat_interval":45000}}"#, 0).unwrap();
        assert_eq!(text(&step.replies[0]), json!({"op": 6, "d": {"token": "{{secret:bot_token}}", "session_id": "abc123", "seq": 41}}));
        gw.handle(r#"{"op":0,"s":42,"t":"RESUMED","d":{}}"#, 0).unwrap();
        assert_eq!(gw.saved.resumes, 0);
        // A resumable invalid session resumes; a final one identifies afresh.
        assert!(gw.handle(r#"{"op":9,"d":true}"#, 0).is_err());
        assert!(gw.saved.session_id.is_some());
        assert!(matches!(gw.handle(r#"{"op":9,"d":false}"#, 0), Err(ChannelError::Network(m)) if m.contains("afresh")));
        assert_eq!(gw.saved.session_id, None);
        assert_eq!(gw.plan("wss://g").unwrap(), "wss://g/?v=10&encoding=json");
        assert!(!gw.resuming());
    }

    #[test]
    fn resumes_that_never_succeed_fall_back_to_identify() {
        let mut gw = Gateway::new(Saved::default());
        gw.plan("wss://g").unwrap();
        ready(&mut gw);
        assert!(gw.plan("wss://g").unwrap().starts_with("wss://gateway-us-east1-b"));
        assert!(gw.plan("wss://g").unwrap().starts_with("wss://gateway-us-east1-b"));
        assert_eq!(gw.plan("wss://g").unwrap(), "wss://g/?v=10&encoding=json");
    }

    #[test]
    fn identifies_without_ready_stop_once_with_the_reason() {
        let mut gw = Gateway::new(Saved::default());
        for _ in 0..2 {
            gw.plan("wss://g").unwrap();
            gw.handle(r#"{"op":10,"d":{"heartbeat_interval":45000}}"#, 0).unwrap();
        }
        assert!(matches!(gw.plan("wss://g"), Err(ChannelError::InvalidConfig(m)) if m.contains("MESSAGE CONTENT")));
        // The next attempt (after the host's wait) tries again.
        assert!(gw.plan("wss://g").is_ok());
    }

    #[test]
    fn saved_state_round_trips() {
        let s = Saved {
            session_id: Some("s".into()),
            resume_url: Some("wss://r".into()),
            seq: Some(9),
            bot_id: Some("1".into()),
            identifies: 1,
            resumes: 1,
        };
        assert_eq!(Saved::from_json(&s.to_json()), s);
        assert_eq!(Saved::from_json("junk"), Saved::default());
        assert_eq!(with_query("wss://x/?v=9"), "wss://x/?v=9");
    }
}
