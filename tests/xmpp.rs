//! The XMPP plugin (plugins/xmpp) in the real daemon against a real server:
//! Prosody (apt) started by each test as a child on a free loopback port,
//! users made with prosodyctl, a MUC service. People are played by a small
//! XMPP client written here; the agent is the echo backend.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{ChildGuard, TestWorkspace, free_port, guest, kata, wait_for_or};

const WAIT: Duration = Duration::from_secs(90);
const BOT: &str = "kata@localhost";
const PASSWORD: &str = "kata-pw-123";
const ROOM: &str = "team@conference.localhost";

struct Prosody {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<ChildGuard>,
}

fn as_prosody(cmd: &mut Command) -> &mut Command {
    cmd.args(["--reuid=prosody", "--regid=prosody", "--init-groups"])
}

impl Prosody {
    fn start() -> Self {
        assert!(Path::new("/usr/bin/prosody").exists(), "prosody is not installed: run scripts/setup.sh (apt-get install prosody)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let port = free_port();
        let conf = std::fs::read_to_string(common::root().join("tests/servers/xmpp/prosody.cfg.lua.in")).unwrap();
        let conf = conf.replace("@DIR@", &dir.path().display().to_string()).replace("@PORT@", &port.to_string());
        std::fs::write(dir.path().join("prosody.cfg.lua"), conf).unwrap();
        assert!(Command::new("chown").args(["-R", "prosody:prosody"]).arg(dir.path()).status().unwrap().success());
        let mut p = Prosody { dir, port, child: None };
        for (user, pw) in [("kata", PASSWORD), ("ann", "annpw"), ("bob", "bobpw")] {
            let st = as_prosody(&mut Command::new("setpriv"))
                .args(["prosodyctl", "--config"])
                .arg(p.cfg())
                .args(["register", user, "localhost", pw])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "prosodyctl register {user}");
        }
        p.run();
        p
    }

    fn cfg(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn run(&mut self) {
        // `prosody --version` would start the server: only ever run it with --config.
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("stdout.log")).unwrap();
        let child = as_prosody(&mut Command::new("setpriv"))
            .args(["lua5.4", "/usr/bin/prosody", "--config"])
            .arg(self.cfg())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start prosody");
        self.child = Some(ChildGuard(Some(child)));
        let port = self.port;
        wait_for_or("prosody to listen", Duration::from_secs(30), || self.log(), || TcpStream::connect(("127.0.0.1", port)).ok());
    }

    fn kill(&mut self) {
        self.child.take().unwrap().signal_and_wait("KILL");
    }

    fn log(&self) -> String {
        ["prosody.log", "prosody.err", "stdout.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Client connections in Prosody's log (it does not log refused SASL
    /// at level info; every kata attempt is one connection), less the one
    /// the test made to see the port open.
    fn client_connections(&self) -> usize {
        self.log().lines().filter(|l| l.contains("Client connected")).count().saturating_sub(1)
    }
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() { A[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;")
}

fn unesc(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&apos;", "'").replace("&quot;", "\"").replace("&amp;", "&")
}

/// A person's XMPP client: plaintext SASL PLAIN on loopback.
struct Person {
    s: TcpStream,
    buf: String,
    /// (from, type, body, thread) of every message received.
    got: Vec<(String, String, String, Option<String>)>,
}

impl Person {
    fn connect(port: u16, user: &str, pw: &str) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut p = Person { s, buf: String::new(), got: Vec::new() };
        let hdr = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
        p.send(hdr);
        p.until("</stream:features>");
        p.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            b64(format!("\0{user}\0{pw}").as_bytes())
        ));
        p.until("<success");
        p.buf.clear();
        p.send(hdr);
        p.until("</stream:features>");
        p.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>test</resource></bind></iq>");
        p.until("</iq>");
        p.buf.clear();
        p.send("<presence/>");
        p
    }

    fn send(&mut self, xml: &str) {
        self.s.write_all(xml.as_bytes()).unwrap();
    }

    fn pump(&mut self) {
        let mut b = [0u8; 65536];
        loop {
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.buf.push_str(&String::from_utf8_lossy(&b[..n])),
            }
        }
        // Collect complete message stanzas.
        while let Some(start) = self.buf.find("<message") {
            let Some(end) = self.buf[start..].find("</message>").map(|e| start + e + 10) else { break };
            let m = self.buf[start..end].to_string();
            self.buf.replace_range(..end, "");
            let attr = |name: &str| m.split(&format!(" {name}='")).nth(1).and_then(|r| r.split('\'').next()).unwrap_or("").to_string();
            let inner = |tag: &str| m.split(&format!("<{tag}>")).nth(1).and_then(|r| r.split(&format!("</{tag}>")).next()).map(unesc);
            if let Some(body) = inner("body") {
                self.got.push((attr("from"), attr("type"), body, inner("thread")));
            }
        }
        if self.buf.len() > 1 << 20 {
            self.buf.clear();
        }
    }

    fn until(&mut self, what: &str) {
        let start = Instant::now();
        while !self.buf.contains(what) {
            assert!(start.elapsed() < Duration::from_secs(20), "waiting for {what}: {}", self.buf);
            let mut b = [0u8; 65536];
            if let Ok(n) = self.s.read(&mut b) {
                assert!(n > 0, "the server closed the stream: {}", self.buf);
                self.buf.push_str(&String::from_utf8_lossy(&b[..n]));
            }
        }
    }

    fn join(&mut self, nick: &str) {
        self.send(&format!(
            "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
        ));
        std::thread::sleep(Duration::from_millis(300));
        self.pump();
    }

    fn chat(&mut self, to: &str, body: &str, extra: &str) {
        let id = format!("t{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        self.send(&format!("<message to='{to}' type='chat' id='{id}'><body>{}</body>{extra}</message>", esc(body)));
    }

    fn group(&mut self, body: &str) {
        let id = format!("g{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        self.send(&format!("<message to='{ROOM}' type='groupchat' id='{id}'><body>{}</body></message>", esc(body)));
    }

    /// Wait for a message with `body` from someone whose JID starts with `from`.
    fn expect(&mut self, from: &str, body: &str, ws: &TestWorkspace) -> (String, String, String, Option<String>) {
        let start = Instant::now();
        loop {
            self.pump();
            if let Some(m) = self.got.iter().find(|m| m.0.starts_with(from) && m.2 == body) {
                return m.clone();
            }
            assert!(start.elapsed() < WAIT, "no {body:?} from {from}; got {:?}\n{}", self.got, ws.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn plugin_toml(p: &Prosody, grant_port: u16) -> String {
    format!(
        r#"
[plugins.xmpp]
path = "{wasm}"
network = ["tcp://127.0.0.1:{grant_port}"]
secrets = {{ password = "env:XMPP_TEST_PASSWORD" }}
config = {{ jid = "{BOT}", server = "tcp://127.0.0.1:{port}", rooms = "{ROOM}", wait_ms = 1000, timeout_ms = 5000, starttls = "off" }}
allow_from = ["*"]
groups = ["{ROOM}"]
"#,
        wasm = guest("xmpp").display(),
        port = p.port,
    )
}

fn status(ws: &TestWorkspace) -> Option<Value> {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    let v: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    v["plugins"].as_array()?.iter().find(|p| p["name"] == "xmpp").cloned()
}

type Row = (String, String, Option<String>, String, String, bool, bool, String);

fn inbox(ws: &TestWorkspace) -> Vec<Row> {
    let conn = rusqlite::Connection::open(ws.path().join(".kata/kata.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT channel_msg_id, conversation, thread, sender, text, is_group, mentioned, attachments FROM inbox ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn xmpp_round_trip_direct_room_threads_attachments_restarts_and_no_echo() {
    let mut prosody = Prosody::start();
    let mut ann = Person::connect(prosody.port, "ann", "annpw");
    let mut bob = Person::connect(prosody.port, "bob", "bobpw");
    ann.join("ann");
    bob.join("bob");
    let ws = TestWorkspace::new(&plugin_toml(&prosody, prosody.port));
    let env = [("XMPP_TEST_PASSWORD", PASSWORD)];
    let mut daemon = ws.run(&env);
    wait_for_or("connected in kata status", WAIT, || ws.log(), || status(&ws).filter(|p| p["channel"]["state"] == "connected"));
    // The bot is in the room once ann sees its presence.
    std::thread::sleep(Duration::from_secs(1));

    ann.chat(BOT, "hello direct", "");
    ann.expect(BOT, "hello direct", &ws);
    ann.chat(BOT, "in a thread", "<thread>t-42</thread>");
    assert_eq!(ann.expect(BOT, "in a thread", &ws).3.as_deref(), Some("t-42"));
    ann.chat(BOT, "a picture", "<x xmlns='jabber:x:oob'><url>https://files.example/up/cat.png</url></x>");
    ann.expect(BOT, "a picture", &ws);

    bob.group("just chatting");
    bob.group("kata: hello group");
    let r = bob.expect(&format!("{ROOM}/kata"), "kata: hello group", &ws);
    assert_eq!(r.1, "groupchat");

    // Prosody crashes and comes back; everyone reconnects.
    prosody.kill();
    std::thread::sleep(Duration::from_secs(1));
    prosody.run();
    let earlier = std::mem::take(&mut ann.got);
    let mut ann = Person::connect(prosody.port, "ann", "annpw");
    ann.got = earlier;
    wait_for_or(
        "kata back online",
        WAIT,
        || ws.log(),
        || status(&ws).filter(|p| p["channel"]["state"] == "connected" && p["health"]["polls"].as_u64() > Some(0)),
    );
    std::thread::sleep(Duration::from_secs(3));
    ann.chat(BOT, "after the restart", "");
    ann.expect(BOT, "after the restart", &ws);

    // kata stops; ann writes; the server keeps it offline; kata answers after its restart.
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    std::thread::sleep(Duration::from_secs(1));
    ann.chat(BOT, "while kata was down", "");
    let mut daemon = ws.run(&env);
    ann.expect(BOT, "while kata was down", &ws);

    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon.signal_and_wait("TERM").success());
    ann.pump();
    let from_bot: Vec<&String> = ann.got.iter().filter(|m| m.0.starts_with(BOT)).map(|m| &m.2).collect();
    let mut unique = from_bot.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), from_bot.len(), "a reply came twice: {from_bot:?}");
    assert_eq!(from_bot.len(), 5, "{from_bot:?}");
    // In the room kata answered the mention only (its reply came back to it
    // from the room and was not taken in).
    bob.pump();
    let in_room: Vec<&String> = bob.got.iter().filter(|m| m.0 == format!("{ROOM}/kata")).map(|m| &m.2).collect();
    assert_eq!(in_room, ["kata: hello group"]);

    let rows = inbox(&ws);
    assert!(rows.iter().all(|r| !r.3.starts_with(BOT) && r.3 != format!("{ROOM}/kata")), "kata's own messages came back in: {rows:#?}");
    let row = |t: &str| rows.iter().find(|r| r.4 == t).unwrap_or_else(|| panic!("{t:?} not in the inbox: {rows:#?}")).clone();
    let d = row("hello direct");
    assert_eq!((d.1.as_str(), d.3.as_str(), d.5, d.6), ("ann@localhost", "ann@localhost", false, true));
    assert_eq!(row("in a thread").2.as_deref(), Some("t-42"));
    let att: Value = serde_json::from_str(&row("a picture").7).unwrap();
    assert_eq!(att[0]["url"], "https://files.example/up/cat.png");
    assert_eq!(att[0]["mime_type"], "image/png");
    let chat = row("just chatting");
    assert_eq!((chat.1.as_str(), chat.5, chat.6), (ROOM, true, false));
    let m = row("kata: hello group");
    assert_eq!((m.5, m.6), (true, true));
    assert_eq!(rows.len(), 7, "each message stored once: {rows:#?}");
    assert!(!ws.log().contains(PASSWORD));
    prosody.kill();
}

#[test]
fn xmpp_wrong_password_is_auth_failed_without_a_retry_storm_and_a_removed_grant_names_the_line() {
    let mut prosody = Prosody::start();
    let ws = TestWorkspace::new(&plugin_toml(&prosody, prosody.port));
    let mut daemon = ws.run(&[("XMPP_TEST_PASSWORD", "not-the-password")]);
    let started = Instant::now();
    let p = wait_for_or(
        "auth-failed in kata status",
        WAIT,
        || ws.log(),
        || status(&ws).filter(|p| p["channel"]["state"] == "failing" && p["channel"]["reason"] == "auth-failed"),
    );
    assert!(p["health"]["last_error"].as_str().unwrap_or("").contains("not-authorized"), "{p:#}");
    std::thread::sleep(Duration::from_secs(10));
    let failures = prosody.client_connections();
    let secs = started.elapsed().as_secs();
    assert!((1..=3).contains(&failures), "{failures} login attempts in {secs} s\n{}", prosody.log());
    eprintln!("measured: {failures} XMPP login attempt(s) in {secs} s with a wrong password");
    assert!(daemon.signal_and_wait("TERM").success());

    // The grant names another port: denied before any byte leaves, the log names the line.
    let ws = TestWorkspace::new(&plugin_toml(&prosody, 1));
    let mut daemon = ws.run(&[("XMPP_TEST_PASSWORD", PASSWORD)]);
    let log = wait_for_or("the denial in the log", WAIT, || ws.log(), || Some(ws.log()).filter(|l| l.contains("denied")));
    let denial = log.lines().find(|l| l.contains("denied")).unwrap();
    assert!(denial.contains(&format!("tcp://127.0.0.1:{}", prosody.port)) && denial.contains("[plugins.xmpp]"), "{denial}");
    wait_for_or("invalid-config in kata status", WAIT, || ws.log(), || status(&ws).filter(|p| p["channel"]["reason"] == "invalid-config"));
    assert!(daemon.signal_and_wait("TERM").success());
    prosody.kill();
}
