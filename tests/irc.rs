//! The IRC plugin (plugins/irc) in the real daemon against a real IRC server:
//! ngircd on loopback, started by the test, and a second IRC client written
//! here that talks to the agent (echo backend) and reads its replies. The
//! server is killed and restarted on the same port and the daemon reconnects;
//! a connection the policy does not grant is refused, logged and audited.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, TestWorkspace, free_port, guest, kata, wait_for};

/// ngircd on `port`, in the foreground as a child of the test (it drops to
/// nobody, so its directory is world-writable for the pid file).
struct Ngircd {
    port: u16,
    _dir: tempfile::TempDir,
    child: ChildGuard,
}

impl Ngircd {
    fn start(port: u16) -> Self {
        let bin = ["/usr/sbin/ngircd", "/usr/bin/ngircd"].into_iter().map(PathBuf::from).find(|p| p.exists());
        let bin = bin.expect("ngircd is not installed: run scripts/setup.sh (apt-get install ngircd)");
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let template = std::fs::read_to_string(common::root().join("tests/servers/irc/ngircd.conf.in")).unwrap();
        let conf = dir.path().join("ngircd.conf");
        std::fs::write(&conf, template.replace("@PORT@", &port.to_string()).replace("@DIR@", &dir.path().display().to_string())).unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ngircd");
        let child = ChildGuard(Some(child));
        wait_for("ngircd to listen", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok());
        Self { port, _dir: dir, child }
    }

    fn stop(mut self) {
        self.child.signal_and_wait("KILL");
    }
}

/// A plain IRC client: registers, joins, and reads lines (answering PINGs).
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    nick: String,
}

impl Client {
    fn connect(port: u16, nick: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut c = Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream, nick: nick.into() };
        c.send(&format!("NICK {nick}"));
        c.send(&format!("USER {nick} 0 * :test client"));
        c.expect("registration (001)", Duration::from_secs(20), |l| l.split(' ').nth(1) == Some("001"));
        c
    }

    fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    }

    /// The next line, or None after the read timeout.
    fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) => panic!("the IRC server closed the connection of {}", self.nick),
            Ok(_) => {
                let line = s.trim_end().to_string();
                if let Some(token) = line.strip_prefix("PING ") {
                    self.send(&format!("PONG {token}"));
                }
                Some(line)
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Read until a line matches, or panic after `timeout`.
    fn expect(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&str) -> bool) -> String {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            if let Some(l) = self.line() {
                if f(&l) {
                    return l;
                }
                seen.push(l);
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}; saw:\n{}", seen.join("\n"));
        }
    }

    /// Join `channel` and wait until `nick` is in it too.
    fn join_and_wait_for(&mut self, channel: &str, nick: &str) {
        self.send(&format!("JOIN {channel}"));
        let start = Instant::now();
        loop {
            self.send(&format!("NAMES {channel}"));
            let mut present = false;
            self.expect("the end of NAMES (366)", Duration::from_secs(10), |l| {
                let parts: Vec<&str> = l.splitn(6, ' ').collect();
                if parts.get(1) == Some(&"353") {
                    let names = l.rsplit(':').next().unwrap_or("");
                    present |= names.split(' ').any(|n| n.trim_start_matches(['@', '+']) == nick);
                }
                parts.get(1) == Some(&"366")
            });
            if present {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{nick} never joined {channel}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Say `text` to `target` and wait for `from`'s PRIVMSG to `reply_target` saying `reply`.
    /// Nothing `from` says before the reply may be anything but the reply.
    fn round_trip(&mut self, target: &str, text: &str, from: &str, reply_target: &str, reply: &str) {
        self.send(&format!("PRIVMSG {target} :{text}"));
        let want = format!("PRIVMSG {reply_target} :{reply}");
        self.expect(&format!("{from}'s reply {want:?}"), Duration::from_secs(30), |l| {
            let by = l.starts_with(&format!(":{from}!")) && l.contains(" PRIVMSG ");
            assert!(!by || l.ends_with(&want), "{from} said something else: {l}");
            by
        });
    }
}

fn workspace(grant_port: u16, server_port: u16) -> TestWorkspace {
    TestWorkspace::new(&format!(
        "\n[plugins.irc]\npath = \"{}\"\nnetwork = [\"tcp://127.0.0.1:{grant_port}\"]\n\
         config = {{ server = \"tcp://127.0.0.1:{server_port}\", nick = \"katabot\", channels = \"#kata\" }}\n\
         allow_from = [\"*\"]\ngroups = [\"#kata\"]\n",
        guest("irc").display()
    ))
}

#[test]
fn talks_on_irc_and_reconnects_after_a_server_restart() {
    let port = free_port();
    let server = Ngircd::start(port);
    let ws = workspace(port, port);
    let mut daemon = ws.run(&[]);

    let mut ann = Client::connect(server.port, "ann");
    ann.join_and_wait_for("#kata", "katabot");
    // Not addressed: stored, but the group gate keeps it from the agent (the
    // round trip below fails if katabot says anything before its reply).
    ann.send("PRIVMSG #kata :just chatting here");
    // Addressed in the channel: the agent answers in the channel, without the address.
    ann.round_trip("#kata", "katabot: hello one", "katabot", "#kata", "hello one");
    // A query: a direct conversation, answered in private.
    ann.round_trip("katabot", "psst", "katabot", "ann", "psst");

    // The server goes away (SIGKILL) and comes back on the same port.
    drop(ann);
    server.stop();
    let server = Ngircd::start(port);
    let mut bob = Client::connect(server.port, "bob");
    bob.join_and_wait_for("#kata", "katabot");
    bob.round_trip("#kata", "katabot, hello two", "katabot", "#kata", "hello two");

    let log = ws.log();
    assert!(log.matches("stream connected").count() >= 2, "{log}");
    assert!(log.contains("reconnecting in"), "{log}");
    assert!(daemon.signal_and_wait("TERM").success());

    // What came in is stored with its conversation kind and mention flag.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    let flags = db.inbox_flags("irc").unwrap();
    assert!(flags.contains(&("#kata".to_string(), true, true)), "{flags:?}");
    assert!(flags.contains(&("ann".to_string(), false, true)), "{flags:?}");
    assert!(flags.contains(&("#kata".to_string(), true, false)), "{flags:?}");
    server.stop();
}

#[test]
fn an_ungranted_irc_server_is_refused_logged_and_audited() {
    let port = free_port();
    let server = Ngircd::start(port);
    // The grant names another port: the plugin's server is not granted.
    let ws = workspace(1, port);
    let mut daemon = ws.run(&[]);
    let log = wait_for("the denial in the log", Duration::from_secs(30), || {
        let log = ws.log();
        log.contains("denied: no network grant").then_some(log)
    });
    assert!(log.contains(&format!("\"tcp://127.0.0.1:{port}\"")) && log.contains("[plugins.irc]"), "{log}");
    assert!(daemon.signal_and_wait("TERM").success());
    let (ok, out, err) = kata(ws.path(), &["audit", "--plugin", "irc", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let denied = rows.as_array().unwrap().iter().find(|r| r["verdict"] == "deny" && r["kind"] == "network").expect("a deny row");
    assert_eq!(denied["method"], "CONNECT");
    assert_eq!(denied["target"], format!("tcp://127.0.0.1:{port}/"));
    assert_eq!(denied["policy"], format!("\"tcp://127.0.0.1:{port}\""));
    // Nothing reached the server: it has no users.
    let mut probe = Client::connect(server.port, "probe");
    probe.send("LUSERS");
    let l = probe.expect("LUSERS (251)", Duration::from_secs(10), |l| l.split(' ').nth(1) == Some("251"));
    assert!(l.contains("There are 1 users"), "{l}");
    server.stop();
}
