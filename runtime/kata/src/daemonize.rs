//! `kata daemon …`: run the daemon in the background (pid from the run lock,
//! output in `.kata/kata.log`), or install it as a systemd user unit / a
//! launchd agent so it starts with the session.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::control::{Client, Request};
use crate::workspace::Workspace;

/// How long `start` waits for the daemon to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The log is rotated (to kata.log.1) at start when it is larger.
const MAX_LOG: u64 = 10 * 1024 * 1024;

/// `kata daemon …`
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start `kata run` in the background; its output goes to .kata/kata.log.
    Start,
    /// Stop the background (or any) daemon of this workspace.
    Stop,
    /// Stop the daemon if it runs, then start it again.
    Restart,
    /// Say whether a daemon runs in this workspace, and show its status.
    Status,
    /// Write a systemd user unit (Linux) or a launchd agent (macOS) that runs
    /// this workspace's daemon at login, and print how to enable it.
    Install,
    /// Remove the unit or agent `install` wrote.
    Uninstall,
}

/// Run a `kata daemon` command.
pub fn command(workspace: Option<&Path>, cmd: DaemonCommand) -> Result<()> {
    let ws = Workspace::discover(workspace)?;
    match cmd {
        DaemonCommand::Start => start(&ws),
        DaemonCommand::Stop => stop(&ws),
        DaemonCommand::Restart => {
            if ws.running_daemon().is_some() {
                stop(&ws)?;
            }
            start(&ws)
        }
        DaemonCommand::Status => match ws.running_daemon() {
            Some(pid) => {
                println!("kata is running in {} (pid {pid}).", ws.root().display());
                crate::client::status(&ws, false)
            }
            None => {
                println!("kata is not running in {}; start it with `kata daemon start`.", ws.root().display());
                Ok(())
            }
        },
        DaemonCommand::Install => install(&ws),
        DaemonCommand::Uninstall => uninstall(&ws),
    }
}

/// The daemon's log file.
pub fn log_path(ws: &Workspace) -> PathBuf {
    ws.state_dir().join("kata.log")
}

fn start(ws: &Workspace) -> Result<()> {
    if let Some(pid) = ws.running_daemon() {
        bail!("kata is already running in {} (pid {pid}); `kata daemon restart` restarts it", ws.root().display());
    }
    // Fail early, in the terminal, on a policy the daemon could not load.
    crate::policy::Policy::load(&ws.policy_path(), ws.root())?;
    ws.ensure_state_dir()?;
    let log = log_path(ws);
    if std::fs::metadata(&log).is_ok_and(|m| m.len() > MAX_LOG) {
        let _ = std::fs::rename(&log, log.with_extension("log.1"));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open the log file {}", log.display()))?;
    let start_offset = file.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().context("cannot find the kata executable to start")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--workspace").arg(ws.root()).arg("run").stdin(std::process::Stdio::null()).stdout(file.try_clone()?).stderr(file);
    #[cfg(unix)]
    {
        // Its own process group: Ctrl-C in this terminal does not reach it.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().context("cannot start `kata run` in the background")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the daemon exited during start ({status}); its output:\n{}", log_since(&log, start_offset).trim_end());
        }
        if let Ok(mut c) = Client::connect(ws)
            && c.call(&Request::Hello, Duration::from_secs(5)).is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the daemon (pid {}) did not answer on its control socket within {START_TIMEOUT:?}; see {}", child.id(), log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("kata started in {} (pid {}); logs: {} (or `kata logs -f`).", ws.root().display(), child.id(), log.display());
    Ok(())
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.take(64 * 1024).read_to_string(&mut s);
    }
    s
}

fn stop(ws: &Workspace) -> Result<()> {
    let Some(pid) = ws.running_daemon() else {
        println!("kata is not running in {}.", ws.root().display());
        return Ok(());
    };
    match Client::connect(ws).and_then(|mut c| c.call(&Request::Stop, Duration::from_secs(30))) {
        Ok(_) => {}
        Err(e) => {
            // No socket (an old or wedged daemon): fall back to SIGTERM.
            tracing::warn!("the control socket did not answer ({e:#}); sending SIGTERM to pid {pid}");
            let ok = pid != 0 && std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().is_ok_and(|s| s.success());
            if !ok {
                bail!("cannot stop the daemon (pid {pid}) of {}: {e:#}", ws.root().display());
            }
        }
    }
    crate::client::wait_stopped(ws, Duration::from_secs(60))?;
    println!("kata stopped (pid {pid}).");
    Ok(())
}

/// A name for this workspace's unit: its directory name and a short hash of
/// its path, so two workspaces never share one.
pub fn unit_name(ws: &Workspace) -> String {
    use sha2::Digest;
    let base: String = ws
        .root()
        .file_name()
        .map(|n| n.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect())
        .unwrap_or_else(|| "workspace".into());
    let hash = hex::encode(&sha2::Sha256::digest(ws.root().as_os_str().as_encoded_bytes())[..4]);
    format!("kata-{base}-{hash}")
}

/// The systemd user unit that runs this workspace's daemon.
pub fn systemd_unit(ws: &Workspace, exe: &Path) -> String {
    let q = |p: &Path| format!("\"{}\"", p.display().to_string().replace('\\', "\\\\").replace('"', "\\\""));
    format!(
        "# Written by `kata daemon install`; remove with `kata daemon uninstall`.\n\
         [Unit]\n\
         Description=kata agent host for {root}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} --workspace {root_q} run\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         # Secrets kata.toml reads from `env:` go here, one NAME=value per line (mode 0600).\n\
         EnvironmentFile=-{env}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        root = ws.root().display(),
        root_q = q(ws.root()),
        exe = q(exe),
        env = ws.state_dir().join("service.env").display(),
    )
}

/// The launchd agent that runs this workspace's daemon.
pub fn launchd_plist(ws: &Workspace, exe: &Path, label: &str) -> String {
    let x = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `kata daemon install`; remove with `kata daemon uninstall`. -->
<plist version="1.0">
<dict>
  <key>Label</key><string>{label}</string>
  <key>ProgramArguments</key>
  <array><string>{exe}</string><string>--workspace</string><string>{root}</string><string>run</string></array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>StandardOutPath</key><string>{log}</string>
  <key>StandardErrorPath</key><string>{log}</string>
</dict>
</plist>
"#,
        label = x(label),
        exe = x(&exe.display().to_string()),
        root = x(&ws.root().display().to_string()),
        log = x(&log_path(ws).display().to_string()),
    )
}

/// Where `install` writes the unit, and what it contains.
fn service_file(ws: &Workspace) -> Result<(PathBuf, String, Vec<String>)> {
    let exe = std::env::current_exe().context("cannot find the kata executable")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let name = unit_name(ws);
    let base = directories::BaseDirs::new().context("cannot find the home directory")?;
    if cfg!(target_os = "macos") {
        let label = format!("dev.kata.{name}");
        let path = base.home_dir().join("Library/LaunchAgents").join(format!("{label}.plist"));
        let next = vec![format!("launchctl load -w {}", path.display())];
        Ok((path, launchd_plist(ws, &exe, &label), next))
    } else {
        let path = base.config_dir().join("systemd/user").join(format!("{name}.service"));
        let next = vec!["systemctl --user daemon-reload".to_string(), format!("systemctl --user enable --now {name}.service")];
        Ok((path, systemd_unit(ws, &exe), next))
    }
}

fn install(ws: &Workspace) -> Result<()> {
    crate::policy::Policy::load(&ws.policy_path(), ws.root())?;
    let (path, body, next) = service_file(ws)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(body.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    println!("Wrote {}.", path.display());
    println!("Enable and start it with:");
    for n in next {
        println!("  {n}");
    }
    Ok(())
}

fn uninstall(ws: &Workspace) -> Result<()> {
    let (path, _, _) = service_file(ws)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {
            println!("Removed {}.", path.display());
            if !cfg!(target_os = "macos") {
                println!("If it was enabled: systemctl --user disable --now {}.service", unit_name(ws));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no service is installed for {} (looked for {})", ws.root().display(), path.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
