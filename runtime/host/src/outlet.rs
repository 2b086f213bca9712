//! The outlet of a channel plugin's stream: where `send` puts the frames a
//! plugin wants written to its open stream connection. The host only keeps
//! the mailbox on the [`ChannelPlugin`](crate::plugin::ChannelPlugin); the
//! connection that opens and drains it is kata-daemon's `stream` module.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::host::latest::Frame;

/// How long a write to the stream may take (a write waits for twice this).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `send` puts the frames a plugin wants written to its open stream.
/// One per plugin, shared by its stream session (which opens it while
/// connected) and its egress loop.
#[derive(Clone, Default)]
pub struct Outlet {
    tx: Arc<Mutex<Option<mpsc::Sender<Write>>>>,
}

/// Frames to write, and where to say whether they were written.
pub struct Write {
    /// The frames, in order.
    pub frames: Vec<Frame>,
    /// Where the stream says whether they were written.
    pub done: oneshot::Sender<Result<(), String>>,
}

impl Outlet {
    /// Open it for a stream connection: writes go to the returned receiver
    /// until [`Self::close`] (or the next `open`).
    pub fn open(&self) -> mpsc::Receiver<Write> {
        let (tx, rx) = mpsc::channel(64);
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Close it: writes fail until it is opened again.
    pub fn close(&self) {
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Write `frames` to the plugin's open stream, in order; Ok once written.
    pub async fn write(&self, frames: Vec<Frame>) -> Result<(), String> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tx = tx.ok_or_else(|| "no stream is open for it to be written to (the message is retried)".to_string())?;
        let (done, rx) = oneshot::channel();
        tx.send(Write { frames, done }).await.map_err(|_| "the stream closed before it was written".to_string())?;
        match tokio::time::timeout(WRITE_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the stream closed before it was written".into()),
            Err(_) => Err(format!("the stream did not take it within {:?}", WRITE_TIMEOUT * 2)),
        }
    }
}
