//! The e-mail plugin (plugins/email) in the real daemon against real mail
//! servers: Dovecot (apt dovecot-imapd) serving IMAP and aiosmtpd (pip, in
//! the venv target/servers/aiosmtpd that scripts/setup.sh makes) accepting
//! SMTP into the same Maildirs, both started by each test as children on
//! free loopback ports. People are played by this test (SMTP in, Maildir
//! files out); the agent is the echo backend.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

use std::io::{BufRead, BufReader, Write};
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

/// Dovecot and aiosmtpd over one directory of Maildirs.
struct MailServers {
    dir: tempfile::TempDir,
    imap_port: u16,
    smtp_port: u16,
    dovecot: Option<ChildGuard>,
    smtpd: Option<ChildGuard>,
}

fn dovecot_bin() -> PathBuf {
    let bin = ["/usr/sbin/dovecot", "/usr/bin/dovecot"].into_iter().map(PathBuf::from).find(|p| p.exists());
    bin.expect("dovecot is not installed: run scripts/setup.sh (apt-get install dovecot-imapd)")
}

fn smtpd_python() -> PathBuf {
    let p = common::root().join("target/servers/aiosmtpd/bin/python");
    assert!(p.exists(), "aiosmtpd is not installed: run scripts/setup.sh (it makes the venv target/servers/aiosmtpd)");
    p
}

fn listening(port: u16) -> Option<()> {
    TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
}

impl MailServers {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Dovecot's mail processes and aiosmtpd run as `mail`: they need
        // to reach the directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("users"), format!("kata:{{PLAIN}}{PASSWORD}\nann:{{PLAIN}}annpw\nbob:{{PLAIN}}bobpw\n")).unwrap();
        std::fs::write(dir.path().join("aliases"), "team: kata, ann, bob\n").unwrap();
        for user in ["kata", "ann", "bob"] {
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(dir.path().join("mail").join(user).join("Maildir").join(sub)).unwrap();
            }
        }
        let st = Command::new("chown").args(["-R", "mail:mail"]).arg(dir.path().join("mail")).status().unwrap();
        assert!(st.success(), "chown mail:mail (the tests run as root)");
        let conf = std::fs::read_to_string(common::root().join("tests/servers/email/dovecot.conf.in")).unwrap();
        let (imap_port, smtp_port) = (free_port(), free_port());
        let conf = conf.replace("@DIR@", &dir.path().display().to_string()).replace("@PORT@", &imap_port.to_string());
        std::fs::write(dir.path().join("dovecot.conf"), conf).unwrap();
        let mut s = MailServers { dir, imap_port, smtp_port, dovecot: None, smtpd: None };
        s.start_dovecot();
        s.start_smtpd();
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn start_dovecot(&mut self) {
        // Dovecot's own pid file would make it refuse to start after a kill.
        let _ = std::fs::remove_file(self.path().join("run/master.pid"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.path().join("dovecot.out")).unwrap();
        let child = Command::new(dovecot_bin())
            .arg("-F")
            .arg("-c")
            .arg(self.path().join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start dovecot");
        self.dovecot = Some(ChildGuard(Some(child)));
        let port = self.imap_port;
        wait_for_or(
            "dovecot to listen",
            Duration::from_secs(30),
            || self.log("dovecot.out") + &self.log("dovecot.log"),
            || listening(port),
        );
    }

    fn start_smtpd(&mut self) {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.path().join("smtpd.out")).unwrap();
        let child = Command::new("setpriv")
            .args(["--reuid=mail", "--regid=mail", "--init-groups"])
            .arg(smtpd_python())
            .arg(common::root().join("tests/servers/email/smtpd.py"))
            .arg(self.smtp_port.to_string())
            .arg(self.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start aiosmtpd");
        self.smtpd = Some(ChildGuard(Some(child)));
        let port = self.smtp_port;
        wait_for_or("aiosmtpd to listen", Duration::from_secs(30), || self.log("smtpd.out"), || listening(port));
    }

    /// SIGKILL Dovecot's master (its children exit with it), as a crash would.
    fn kill_dovecot(&mut self) {
        self.dovecot.take().unwrap().signal_and_wait("KILL");
        // The login and mail processes notice their master is gone.
        std::thread::sleep(Duration::from_millis(500));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// IMAP logins Dovecot saw for `user`: (accepted, refused).
    fn logins(&self, user: &str) -> (usize, usize) {
        let log = self.log("dovecot.log");
        let ok = log.lines().filter(|l| l.contains("imap-login: Info: Login: user=<") && l.contains(&format!("user=<{user}>"))).count();
        let failed =
            log.lines().filter(|l| l.contains("auth failed") || l.contains("Authentication failure") || l.contains("unknown user")).count();
        (ok, failed)
    }

    /// The JSON lines aiosmtpd logged (connect, auth, tempfail, data).
    fn smtp_events(&self) -> Vec<Value> {
        self.log("mail/smtp-events.log").lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Make the next `n` DATA commands answer 451 4.7.1.
    fn tempfail(&self, n: u32) {
        let p = self.path().join("mail/smtp-tempfail");
        std::fs::write(&p, n.to_string()).unwrap();
        let _ = Command::new("chown").arg("mail:mail").arg(&p).status();
    }

    /// Send a mail over SMTP: envelope from `from` to `rcpt`, with `head`
    /// (header lines, CRLF-separated) and `body`.
    fn send(&self, from: &str, rcpt: &[&str], head: &str, body: &str) {
        let stream = TcpStream::connect(("127.0.0.1", self.smtp_port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let expect = |code: &str, r: &mut BufReader<TcpStream>| loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "SMTP: expected {code}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        };
        expect("220", &mut r);
        let mut cmd = |line: &str, code: &str, r: &mut BufReader<TcpStream>| {
            w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            expect(code, r);
        };
        cmd("EHLO test", "250", &mut r);
        cmd(&format!("MAIL FROM:<{from}>"), "250", &mut r);
        for to in rcpt {
            cmd(&format!("RCPT TO:<{to}>"), "250", &mut r);
        }
        cmd("DATA", "354", &mut r);
        let data = format!("From: {from}\r\n{head}\r\n\r\n{body}").replace("\r\n", "\n").replace('\n', "\r\n");
        let stuffed: Vec<String> = data.split("\r\n").map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() }).collect();
        cmd(&format!("{}\r\n.", stuffed.join("\r\n")), "250", &mut r);
        cmd("QUIT", "221", &mut r);
    }

    /// The mails in `user`'s Maildir (new and cur), oldest first.
    fn mails(&self, user: &str) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(self.path().join("mail").join(user).join("Maildir").join(sub)) else { continue };
            for e in rd.flatten() {
                files.push((e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()));
            }
        }
        files.sort();
        files.into_iter().filter_map(|(_, p)| std::fs::read(p).ok()).map(|raw| Mail::parse(&raw)).collect()
    }

    /// What kata sent that reached `user`.
    fn sent_by_bot(&self, user: &str) -> Vec<Mail> {
        self.mails(user).into_iter().filter(|m| m.header("from").contains(BOT)).collect()
    }
}

/// A mail as the test reads it: headers (unfolded) and the body text.
#[derive(Debug, Clone)]
struct Mail {
    headers: Vec<(String, String)>,
    body: String,
}

impl Mail {
    fn parse(raw: &[u8]) -> Mail {
        let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Mail { headers, body: body.trim_end().to_string() }
    }

    fn header(&self, name: &str) -> String {
        self.headers.iter().find(|h| h.0 == name).map(|h| h.1.clone()).unwrap_or_default()
    }
}

/// The `[plugins.email]` table for `servers`, then `extra` lines.
fn plugin_toml(servers: &MailServers, extra: &str) -> String {
    format!(
        r#"
[plugins.email]
path = "{wasm}"
network = [
    "tcp://127.0.0.1:{imap}",
    "tcp://127.0.0.1:{smtp}",
]
secrets = {{ password = "env:EMAIL_TEST_PASSWORD" }}
config = {{ address = "{BOT}", username = "kata", imap = "tcp://127.0.0.1:{imap}", smtp = "tcp://127.0.0.1:{smtp}", group_addresses = "team@localhost", poll_interval = "300ms", timeout_ms = 5000, retry_after_ms = 2000 }}
allow_from = ["*"]
groups = ["team@localhost"]
{extra}
"#,
        wasm = guest("email").display(),
        imap = servers.imap_port,
        smtp = servers.smtp_port,
    )
}

/// The plugin's row in `kata status --json`.
fn status(ws: &TestWorkspace) -> Option<Value> {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    let v: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    v["plugins"].as_array()?.iter().find(|p| p["name"] == "email").cloned()
}

fn polls(ws: &TestWorkspace) -> u64 {
    status(ws).map_or(0, |p| p["health"]["polls"].as_u64().unwrap_or(0))
}

/// Wait for kata's reply whose body is `text` in `user`'s Maildir.
/// The plugin's grants and config for calling its component directly (no
/// daemon): the password in a file under `dir` (mode 0600).
fn direct_grants(servers: &MailServers, dir: &std::path::Path) -> String {
    let secret = dir.join("password");
    std::fs::write(&secret, PASSWORD).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "network = [\"tcp://127.0.0.1:{imap}\", \"tcp://127.0.0.1:{smtp}\"]\nsecrets = {{ password = \"file:{secret}\" }}\n\
         config = {{ address = \"{BOT}\", username = \"kata\", imap = \"tcp://127.0.0.1:{imap}\", smtp = \"tcp://127.0.0.1:{smtp}\" }}",
        imap = servers.imap_port,
        smtp = servers.smtp_port,
        secret = secret.display(),
    )
}

fn reply(servers: &MailServers, ws: &TestWorkspace, user: &str, text: &str) -> Mail {
    wait_for_or(
        &format!("kata's reply {text:?} to {user}"),
        WAIT,
        || format!("{}\n--- dovecot\n{}\n--- smtp\n{}", ws.log(), servers.log("dovecot.log"), servers.log("mail/smtp-events.log")),
        || servers.sent_by_bot(user).into_iter().find(|m| m.body == text),
    )
}

/// Every body kata sent to `user` appears once; returns them.
fn each_once(servers: &MailServers, user: &str) -> Vec<String> {
    let bodies: Vec<String> = servers.sent_by_bot(user).into_iter().map(|m| m.body).collect();
    let mut unique = bodies.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), bodies.len(), "kata sent something twice to {user}: {bodies:?}");
    bodies
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
fn email_round_trip_direct_group_threads_attachments_restarts_and_no_echo() {
    let mut servers = MailServers::start();
    // Mail from before kata's first start is not answered.
    servers.send("ann@localhost", &[BOT], "To: kata@localhost\r\nSubject: old\r\nMessage-ID: <old@localhost>", "from before");
    let ws = TestWorkspace::new(&plugin_toml(&servers, ""));
    let env = [("EMAIL_TEST_PASSWORD", PASSWORD)];
    let mut daemon = ws.run(&env);
    wait_for_or("the first poll", WAIT, || ws.log(), || (polls(&ws) > 0).then_some(()));
    wait_for_or("connected in kata status", WAIT, || ws.log(), || status(&ws).filter(|p| p["channel"]["state"] == "connected"));

    // Direct: answered by mail, threaded under the question.
    servers.send(
        "ann@localhost",
        &[BOT],
        "To: Kata <kata@localhost>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <d1@localhost>",
        "hello direct",
    );
    let r1 = reply(&servers, &ws, "ann", "hello direct");
    assert_eq!(r1.header("in-reply-to"), "<d1@localhost>", "{r1:?}");
    assert_eq!(r1.header("references"), "<d1@localhost>", "{r1:?}");
    // "Re: Grüße" as one RFC 2047 encoded word.
    assert_eq!(r1.header("subject"), "=?utf-8?B?UmU6IEdyw7zDn2U=?=", "{r1:?}");
    assert!(r1.header("to").contains("ann@localhost"), "{r1:?}");
    let r1_id = r1.header("message-id");
    assert!(r1_id.starts_with("<kata.") && !r1.header("x-kata-idempotency-key").is_empty(), "{r1:?}");

    // A reply in that thread, quoting kata: the quote is dropped, the
    // answer keeps the whole References chain.
    servers.send(
        "ann@localhost",
        &[BOT],
        &format!("To: kata@localhost\r\nSubject: Re: Grüße\r\nMessage-ID: <d2@localhost>\r\nIn-Reply-To: {r1_id}\r\nReferences: <d1@localhost> {r1_id}"),
        "and a follow-up\n\nOn Wed, kata wrote:\n> hello direct\n",
    );
    let r2 = reply(&servers, &ws, "ann", "and a follow-up");
    assert_eq!(r2.header("references"), format!("<d1@localhost> {r1_id} <d2@localhost>"), "{r2:?}");

    // The group (team@localhost reaches kata, ann and bob): chatter is
    // stored, not answered; a mention is answered to the group.
    servers.send(
        "bob@localhost",
        &["team@localhost"],
        "To: team@localhost\r\nSubject: lunch\r\nMessage-ID: <g1@localhost>",
        "just chatting",
    );
    servers.send(
        "bob@localhost",
        &["team@localhost"],
        "To: team@localhost\r\nSubject: q\r\nMessage-ID: <g2@localhost>",
        "kata: hello group",
    );
    let g = reply(&servers, &ws, "bob", "kata: hello group");
    assert!(g.header("to").contains("team@localhost"), "{g:?}");

    // An attachment.
    servers.send(
        "ann@localhost",
        &[BOT],
        "To: kata@localhost\r\nSubject: report\r\nMessage-ID: <a1@localhost>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"",
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n",
    );
    reply(&servers, &ws, "ann", "see attached");

    // Dovecot crashes; mail keeps arriving (SMTP is up); Dovecot comes back.
    servers.kill_dovecot();
    servers.send("ann@localhost", &[BOT], "To: kata@localhost\r\nSubject: x\r\nMessage-ID: <c1@localhost>", "while imap was down");
    std::thread::sleep(Duration::from_secs(2));
    servers.start_dovecot();
    reply(&servers, &ws, "ann", "while imap was down");

    // kata stops; mail arrives; kata starts again and answers all of it once.
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    let missed: Vec<String> = (1..=3).map(|i| format!("while kata was down {i}")).collect();
    for (i, m) in missed.iter().enumerate() {
        servers.send("ann@localhost", &[BOT], &format!("To: kata@localhost\r\nSubject: m\r\nMessage-ID: <m{i}@localhost>"), m);
    }
    let mut daemon = ws.run(&env);
    for m in &missed {
        reply(&servers, &ws, "ann", m);
    }
    // Settle long enough for an echo loop to show, then count.
    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon.signal_and_wait("TERM").success());
    let to_ann = each_once(&servers, "ann");
    assert_eq!(to_ann.len(), 4 + missed.len() + 1, "{to_ann:?}"); // + the group reply, which ann gets as a member
    assert_eq!(each_once(&servers, "bob"), ["kata: hello group"]);
    // kata's own mail (the group reply) reached kata's mailbox and was not taken in.
    assert!(servers.mails("kata").iter().any(|m| m.header("from").contains(BOT)), "the group reply should reach kata's mailbox too");

    let rows = inbox(&ws);
    assert!(rows.iter().all(|r| r.3 != BOT), "kata's own mail came back in: {rows:#?}");
    assert!(rows.iter().all(|r| r.4 != "from before"), "mail from before the first start was taken in: {rows:#?}");
    let row = |t: &str| rows.iter().find(|r| r.4 == t).unwrap_or_else(|| panic!("{t:?} not in the inbox: {rows:#?}")).clone();
    let d = row("hello direct");
    assert_eq!(
        (d.0.as_str(), d.1.as_str(), d.2.as_deref(), d.5, d.6),
        ("d1@localhost", "ann@localhost", Some("d1@localhost"), false, true)
    );
    assert_eq!(row("and a follow-up").2.as_deref(), Some("d1@localhost"));
    let chat = row("just chatting");
    assert_eq!((chat.1.as_str(), chat.5, chat.6), ("team@localhost", true, false));
    let m = row("kata: hello group");
    assert_eq!((m.5, m.6), (true, true));
    let att: Value = serde_json::from_str(&row("see attached").7).unwrap();
    assert_eq!(att, serde_json::json!([{"name": "report.pdf", "mime_type": "application/pdf", "url": null, "size": 9}]));
    assert_eq!(rows.len(), 6 + missed.len(), "each mail stored once: {rows:#?}");
    assert!(!ws.log().contains(PASSWORD), "the password leaked into kata's log");
}

#[test]
fn email_temporary_smtp_refusals_are_retried_after_the_pause() {
    let servers = MailServers::start();
    let ws = TestWorkspace::new(&plugin_toml(&servers, ""));
    let mut daemon = ws.run(&[("EMAIL_TEST_PASSWORD", PASSWORD)]);
    wait_for_or("the first poll", WAIT, || ws.log(), || (polls(&ws) > 0).then_some(()));
    // The SMTP server throttles: 451 4.7.1 once. kata waits retry_after_ms
    // (2 s) and delivers once.
    servers.tempfail(1);
    servers.send("ann@localhost", &[BOT], "To: kata@localhost\r\nSubject: s\r\nMessage-ID: <s1@localhost>", "slow down");
    reply(&servers, &ws, "ann", "slow down");
    let events = servers.smtp_events();
    let t = |kind: &str| events.iter().find(|e| e["event"] == kind && e["mail_from"] == BOT).map(|e| e["t"].as_f64().unwrap());
    let (refused, delivered) = (t("tempfail").expect("a 451"), t("data").expect("a delivery"));
    assert!(delivered - refused >= 2.0, "the retry came {:.2} s after 451 4.7.1 (retry_after_ms = 2000)", delivered - refused);
    // AUTH was offered and used, with the password the host filled in.
    assert!(events.iter().any(|e| e["event"] == "auth" && e["user"] == "kata" && e["ok"] == true), "{events:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.signal_and_wait("TERM").success());
    assert_eq!(each_once(&servers, "ann"), ["slow down"]);
}

#[test]
fn email_wrong_password_is_auth_failed_without_a_retry_storm_and_a_removed_grant_names_the_line() {
    let servers = MailServers::start();
    let ws = TestWorkspace::new(&plugin_toml(&servers, ""));
    let mut daemon = ws.run(&[("EMAIL_TEST_PASSWORD", "not-the-password")]);
    let started = Instant::now();
    let p = wait_for_or(
        "auth-failed in kata status",
        WAIT,
        || ws.log(),
        || status(&ws).filter(|p| p["channel"]["state"] == "failing" && p["channel"]["reason"] == "auth-failed"),
    );
    let err = p["health"]["last_error"].as_str().unwrap_or("").to_string();
    assert!(err.contains("refused the login") && err.contains("password"), "{p:#}");
    let (_, human, _) = kata(ws.path(), &["status"]);
    assert!(human.lines().any(|l| l.starts_with("email") && l.contains("failing: auth-failed")), "{human}");
    std::thread::sleep(Duration::from_secs(10));
    let (_, failed) = servers.logins("kata");
    let secs = started.elapsed().as_secs();
    assert!((1..=3).contains(&failed), "{failed} refused logins in {secs} s: a retry storm\n{}", servers.log("dovecot.log"));
    eprintln!("measured: {failed} refused IMAP login(s) in {secs} s with a wrong password");
    assert!(daemon.signal_and_wait("TERM").success());
    assert!(!ws.log().contains("not-the-password"));

    // The IMAP grant removed: the connection is refused before any byte
    // leaves, and the log names the line to add under [plugins.email].
    let ws = TestWorkspace::new(&plugin_toml(&servers, ""));
    let path = ws.path().join("kata.toml");
    let line = format!("    \"tcp://127.0.0.1:{}\",\n", servers.imap_port);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&line));
    std::fs::write(&path, text.replace(&line, "")).unwrap();
    let before = servers.logins("kata");
    let mut daemon = ws.run(&[("EMAIL_TEST_PASSWORD", PASSWORD)]);
    let log = wait_for_or("the denial in the log", WAIT, || ws.log(), || Some(ws.log()).filter(|l| l.contains("denied")));
    let denial = log.lines().find(|l| l.contains("denied")).unwrap();
    assert!(denial.contains(&format!("tcp://127.0.0.1:{}", servers.imap_port)) && denial.contains("[plugins.email]"), "{denial}");
    wait_for_or("invalid-config in kata status", WAIT, || ws.log(), || status(&ws).filter(|p| p["channel"]["reason"] == "invalid-config"));
    assert!(daemon.signal_and_wait("TERM").success());
    assert_eq!(servers.logins("kata"), before, "nothing reached Dovecot");
    let (ok, out, err) = kata(ws.path(), &["audit", "--plugin", "email", "--json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert!(rows.as_array().unwrap().iter().any(|r| r["verdict"] == "deny" && r["kind"] == "network"), "{rows:#}");
}

#[test]
fn email_a_changed_uidvalidity_rereads_the_mailbox_without_answering_twice() {
    let servers = MailServers::start();
    let ws = TestWorkspace::new(&plugin_toml(&servers, ""));
    let env = [("EMAIL_TEST_PASSWORD", PASSWORD)];
    let mut daemon = ws.run(&env);
    wait_for_or("the first poll", WAIT, || ws.log(), || (polls(&ws) > 0).then_some(()));
    servers.send("ann@localhost", &[BOT], "To: kata@localhost\r\nSubject: u\r\nMessage-ID: <u1@localhost>", "before the change");
    reply(&servers, &ws, "ann", "before the change");
    assert!(daemon.signal_and_wait("TERM").success());

    // The mailbox gets a new UIDVALIDITY (as after a restore or a rebuilt
    // index): kata's cursor names UIDs that mean nothing any more.
    let out = Command::new("doveadm")
        .arg("-c")
        .arg(servers.path().join("dovecot.conf"))
        .args(["mailbox", "update", "-u", "kata", "--uid-validity", "12345", "INBOX"])
        .output()
        .unwrap();
    assert!(out.status.success(), "doveadm: {}", String::from_utf8_lossy(&out.stderr));
    servers.send("ann@localhost", &[BOT], "To: kata@localhost\r\nSubject: u\r\nMessage-ID: <u2@localhost>", "after the change");
    let mut daemon = ws.run(&env);
    reply(&servers, &ws, "ann", "after the change");
    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon.signal_and_wait("TERM").success());
    assert_eq!(each_once(&servers, "ann"), ["before the change", "after the change"]);
    assert!(ws.log().contains("the UIDVALIDITY of"), "{}", ws.log());
    assert_eq!(inbox(&ws).len(), 2, "{:#?}", inbox(&ws));
}

/// SMTP has no idempotent submission: the same reply sent twice (a retry
/// after a crash, from a fresh instance) arrives twice, with one Message-ID
/// — which is what README's delivery paragraph says.
#[test]
fn email_the_same_key_sent_twice_carries_one_message_id() {
    let servers = MailServers::start();
    let dir = tempfile::tempdir().unwrap();
    let lines = direct_grants(&servers, dir.path());
    let out = kata::host::latest::OutboundMessage {
        conversation: "ann@localhost".into(),
        thread: None,
        reply_to: None,
        text: "only once, ideally".into(),
        idempotency_key: "outbox-7".into(),
        attachments: vec![],
        actions: vec![],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (a, b) = rt.block_on(async {
        let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
        let engine = kata::engine::Engine::new(None).unwrap();
        let plugin = common::load_plugin(&engine, &db, "email", &guest("email"), &lines, dir.path()).unwrap();
        let mut first = plugin.instantiate().await.unwrap();
        first.connect().await.unwrap();
        let a = first.send(&out).await.unwrap();
        let mut second = plugin.instantiate().await.unwrap();
        second.connect().await.unwrap();
        (a, second.send(&out).await.unwrap())
    });
    drop(rt);
    assert!(a.id.starts_with("kata.outbox-7.") && a.id == b.id, "{} vs {}", a.id, b.id);
    let got: Vec<Mail> = servers.sent_by_bot("ann").into_iter().filter(|m| m.body == "only once, ideally").collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|m| m.header("message-id") == format!("<{}>", a.id)), "{got:?}");
}

/// Replies due together go out through `send-batch` in ONE SMTP session
/// (one connection and AUTH, then MAIL/RCPT/DATA per reply, each with the
/// Message-ID of its outbox key). A recipient the server refuses (550 at
/// RCPT) fails only its own reply — RSET, and the next goes on in the same
/// session — and that reply is retried alone until it is a dead letter, as
/// for `send`.
#[test]
fn email_replies_due_together_go_out_in_one_smtp_session_and_a_refused_recipient_fails_alone() {
    let servers = MailServers::start();
    // One send lane: every due reply is in its share, so one batch.
    let ws = TestWorkspace::new(&plugin_toml(&servers, "limits = { concurrent_sends = 1 }"));
    // Queued while the daemon is down: all due at its start.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    let queued = [
        ("ann@localhost", "batch one"),
        ("nobody@localhost", "to nobody"),
        ("bob@localhost", "batch two"),
        ("ann@localhost", "batch three"),
        ("bob@localhost", "batch four"),
    ];
    for (i, (to, text)) in queued.iter().enumerate() {
        let reply = kata::store::Reply {
            plugin: "email".into(),
            conversation: to.to_string(),
            thread: None,
            reply_to: None,
            text: text.to_string(),
            rich: Default::default(),
        };
        db.enqueue(&reply, &format!("batch-{i}")).unwrap();
    }
    let mut daemon = ws.run(&[("EMAIL_TEST_PASSWORD", PASSWORD)]);
    for (to, text) in queued.iter().filter(|q| q.0 != "nobody@localhost") {
        reply(&servers, &ws, to.split('@').next().unwrap(), text);
    }
    // The refused reply: retried alone (a session of its own each time)
    // until its attempts are used up (550 is permanent: 5).
    let dead = wait_for_or(
        "the refused reply to become a dead letter",
        WAIT,
        || format!("{}\n--- smtp\n{}", ws.log(), servers.log("mail/smtp-events.log")),
        || db.dead_letters(Some("email"), 10).ok().filter(|d| !d.is_empty()),
    );
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].conversation.as_str(), dead[0].attempts), ("nobody@localhost", 5), "{dead:?}");
    let why = dead[0].last_error.clone().unwrap_or_default();
    assert!(why.contains("550") && why.contains("RCPT TO <nobody@localhost>"), "{why}");

    let events = servers.smtp_events();
    let kata_conns = |kind: &str| -> Vec<u64> {
        events.iter().filter(|e| e["event"] == kind && e["mail_from"] == BOT).map(|e| e["conn"].as_u64().unwrap()).collect()
    };
    let (delivered, refused) = (kata_conns("data"), kata_conns("rcpt-refused"));
    assert_eq!(delivered.len(), 4, "{events:#?}");
    assert!(delivered.iter().all(|c| *c == delivered[0]), "the four replies came in sessions {delivered:?}, not one: {events:#?}");
    assert_eq!(refused.len(), 5, "{events:#?}");
    assert_eq!(refused[0], delivered[0], "the refused recipient was tried in the same session: {events:#?}");
    let mut retries = refused[1..].to_vec();
    retries.dedup();
    assert_eq!(retries.len(), 4, "each retry is a session of its own: {refused:?}");
    assert!(retries.iter().all(|c| *c != delivered[0]), "{refused:?}");
    // One connection and one AUTH for the batch.
    let auths = events.iter().filter(|e| e["event"] == "auth" && e["conn"] == delivered[0]).count();
    assert_eq!(auths, 1, "{events:#?}");

    // Each reply arrived once, with the Message-ID of its outbox key.
    assert_eq!(each_once(&servers, "ann"), ["batch one", "batch three"]);
    assert_eq!(each_once(&servers, "bob"), ["batch two", "batch four"]);
    for (user, text, key) in [("ann", "batch one", "batch-0"), ("bob", "batch two", "batch-2"), ("ann", "batch three", "batch-3")] {
        let m = servers.sent_by_bot(user).into_iter().find(|m| m.body == text).unwrap();
        assert!(m.header("message-id").starts_with(&format!("<kata.{key}.")), "{m:?}");
    }
    let conn = db.lock();
    let attempts: Vec<u32> = conn
        .prepare("SELECT attempts FROM outbox WHERE status = 'sent'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(attempts, [1, 1, 1, 1], "the delivered replies were sent once each");
}

/// The e-mail plugin exports `channel-batch` (kata-sdk's
/// `export_channel!(T, batch)`); a channel exported with plain
/// `export_channel!` (guest-quiet) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_exports_send_batch_and_a_plain_sdk_channel_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
    let engine = kata::engine::Engine::new(None).unwrap();
    let email = common::load_plugin(&engine, &db, "email", &guest("email"), "", dir.path()).unwrap();
    assert!(email.can_send_batch());
    let quiet = common::load_plugin(&engine, &db, "quiet", &guest("guest-quiet"), "", dir.path()).unwrap();
    assert!(!quiet.can_send_batch());
}

/// Not run by the suite: the measurement behind BENCHMARKS.md's "send-batch
/// over SMTP" row. 32 replies to aiosmtpd on loopback, on one send
/// instance: one `send` each (a session per reply) against one `send-batch`
/// (one session), interleaved over `KATA_SMTP_BENCH_ROUNDS` rounds (5).
/// Prints each round's times and the median ratio; asserts only what arrived.
///
/// `cargo test -p kata --test integration email:: -- --ignored --nocapture email_send_batch_measure`
#[test]
#[ignore]
fn email_send_batch_measure() {
    const N: usize = 32;
    let rounds: usize = std::env::var("KATA_SMTP_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let servers = MailServers::start();
    let dir = tempfile::tempdir().unwrap();
    let lines = direct_grants(&servers, dir.path());
    let msg = |round: usize, kind: &str, i: usize| kata::host::latest::OutboundMessage {
        conversation: "ann@localhost".into(),
        thread: None,
        reply_to: None,
        text: format!("{kind} {round} {i}"),
        idempotency_key: format!("{kind}-{round}-{i}"),
        attachments: vec![],
        actions: vec![],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let times = rt.block_on(async {
        let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
        let engine = kata::engine::Engine::new(None).unwrap();
        let plugin = common::load_plugin(&engine, &db, "email", &guest("email"), &lines, dir.path()).unwrap();
        let mut inst = plugin.instantiate().await.unwrap();
        inst.connect().await.unwrap();
        // Warm up: one of each.
        inst.send(&msg(0, "warm", 0)).await.unwrap();
        inst.send_batch(&[msg(0, "warm", 1), msg(0, "warm", 2)]).await.unwrap();
        let mut times = Vec::new();
        for round in 1..=rounds {
            let t = Instant::now();
            for i in 0..N {
                inst.send(&msg(round, "single", i)).await.unwrap();
            }
            let single = t.elapsed();
            let batch: Vec<_> = (0..N).map(|i| msg(round, "batch", i)).collect();
            let t = Instant::now();
            let results = inst.send_batch(&batch).await.unwrap();
            let batched = t.elapsed();
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            eprintln!("round {round}: {N} replies, one session each {single:?}, one session {batched:?}");
            times.push((single, batched));
        }
        times
    });
    drop(rt);
    let mut ratios: Vec<f64> = times.iter().map(|(s, b)| s.as_secs_f64() / b.as_secs_f64()).collect();
    ratios.sort_by(f64::total_cmp);
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / N as f64;
    let mut single: Vec<f64> = times.iter().map(|t| per(t.0)).collect();
    let mut batched: Vec<f64> = times.iter().map(|t| per(t.1)).collect();
    single.sort_by(f64::total_cmp);
    batched.sort_by(f64::total_cmp);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "measured: {N} replies over SMTP (aiosmtpd, loopback, AUTH PLAIN, no TLS): median {:.2} ms/reply with a session each, \
         {:.2} ms/reply in one session: {:.1}x (ratios {ratios:.1?}); load {}",
        single[single.len() / 2],
        batched[batched.len() / 2],
        ratios[ratios.len() / 2],
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    let sessions: std::collections::HashSet<u64> = servers
        .smtp_events()
        .iter()
        .filter(|e| e["event"] == "data" && e["mail_from"] == BOT)
        .map(|e| e["conn"].as_u64().unwrap())
        .collect();
    assert_eq!(sessions.len(), 1 + 1 + rounds * (N + 1), "one session per single send, one per batch");
    assert_eq!(servers.sent_by_bot("ann").len(), 3 + rounds * 2 * N);
}
