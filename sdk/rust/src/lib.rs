//! # kata-sdk: write kata channel plugins in Rust
//!
//! A kata channel plugin is a WebAssembly component that connects the kata
//! agent host to a chat network. This crate hides the component plumbing
//! behind a small typed API:
//!
//! - implement [`Channel`] for a type and export it with [`export_channel!`];
//! - talk to the host with [`log`], [`state`], [`config`] and [`now_ms`];
//! - make HTTP requests with [`http`] (the host decides which hosts are
//!   reachable and fills in `{{secret:NAME}}` placeholders);
//! - talk a protocol that is not HTTP (SMTP, IMAP, XMPP) over a TCP or TLS
//!   [`net::Connection`], checked by the host like HTTP;
//! - offer typing indicators, edits and reactions with [`Channel::act`],
//!   listed in [`ChannelInfo::features`];
//! - deliver several replies in one call with [`BatchSend`], exported with
//!   `export_channel!(T, batch)`, where the network profits (one API
//!   request, one SMTP session).
//!
//! The SDK targets the WIT contract `kata:plugin@`[`WIT_VERSION`] (world
//! `channel-plugin`). [`export_channel!`] also records that version in the
//! plugin as a custom section named `kata:wit-version`, so the host can tell
//! which contract a plugin was built against.
//!
//! ## Example
//!
//! ```no_run
//! use kata_sdk::prelude::*;
//!
//! /// Echoes nothing, receives nothing: the smallest useful channel.
//! struct Quiet {
//!     greeting: String,
//! }
//!
//! impl Channel for Quiet {
//!     fn describe() -> ChannelInfo {
//!         ChannelInfo::new("quiet", env!("CARGO_PKG_VERSION"), vec![IngressMode::Poll])
//!     }
//!
//!     fn connect() -> Result<Self, ChannelError> {
//!         let greeting = config::get("greeting").unwrap_or_else(|| "hi".into());
//!         log::info("connected");
//!         Ok(Quiet { greeting })
//!     }
//!
//!     fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
//!         Ok(PollResult { messages: vec![], cursor, next_poll_ms: Some(5_000) })
//!     }
//!
//!     fn send(&mut self, msg: OutboundMessage) -> Result<SendReceipt, ChannelError> {
//!         log::debug(&format!("{} -> {}: {}", self.greeting, msg.conversation, msg.text));
//!         Ok(SendReceipt::sent(msg.idempotency_key))
//!     }
//! }
//!
//! kata_sdk::export_channel!(Quiet);
//! ```
//!
//! ## Streams
//!
//! A channel that holds a connection open (IRC, a websocket gateway, server-sent
//! events, webhooks) does not open it itself: it lists
//! [`IngressMode::Subscribe`] in [`ChannelInfo::ingress`], returns a
//! [`Subscription`] from [`Channel::subscribe`], and the host connects — after
//! checking the URL against the plugin's network grant — and hands every line
//! or message to [`Channel::on_frame`]. Frames the plugin returns in
//! [`FrameResult::replies`] are written back; a plugin that sends over the
//! same connection returns its lines in [`SendReceipt::frames`]:
//!
//! ```no_run
//! use kata_sdk::prelude::*;
//!
//! struct Lines;
//!
//! impl Channel for Lines {
//!     fn describe() -> ChannelInfo {
//!         ChannelInfo::new("lines", "0.1.0", vec![IngressMode::Subscribe])
//!     }
//!     fn connect() -> Result<Self, ChannelError> {
//!         Ok(Lines)
//!     }
//!     fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
//!         Err(ChannelError::Unsupported)
//!     }
//!     fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
//!         Ok(Subscription::tcp_lines("tcp://chat.example.org:7000").initial(Frame::text("HELLO kata")))
//!     }
//!     fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
//!         let Some(line) = frame.as_text() else { return Ok(FrameResult::default()) };
//!         if let Some(rest) = line.strip_prefix("MSG ") {
//!             let (from, text) = rest.split_once(' ').unwrap_or((rest, ""));
//!             let id = format!("{from}-{}", now_ms());
//!             return Ok(FrameResult::messages(vec![Message::text(id, from, from, text)]));
//!         }
//!         Ok(FrameResult::default())
//!     }
//!     fn send(&mut self, msg: OutboundMessage) -> Result<SendReceipt, ChannelError> {
//!         let line = format!("MSG {} {}", msg.conversation, msg.text);
//!         Ok(SendReceipt::over_stream(msg.idempotency_key, vec![Frame::text(line)]))
//!     }
//! }
//!
//! kata_sdk::export_channel!(Lines);
//! ```
//!
//! Build the plugin as a `cdylib` for `wasm32-wasip1`
//! (`cargo build --release --target wasm32-wasip1`); `kata plugin build`
//! turns the core module into a component. In the release profile use
//! `strip = "debuginfo"` (not `strip = true`) so custom sections survive.
//!
//! The crate also compiles for the native target, so plugins can unit-test
//! their parsing and error mapping with plain `cargo test`; calling a host
//! function natively panics, as there is no host.

#![warn(missing_docs)]

pub mod config;
pub mod http;
pub mod log;
pub mod net;
pub mod state;

/// Bindings generated by `wit-bindgen` for the world `channel-plugin` of
/// `kata:plugin@0.1.3`.
///
/// Most plugins never need this module: the typed records are re-exported at
/// the crate root and in [`prelude`](crate::prelude), and [`export_channel!`]
/// does the exporting. It is public so that advanced plugins can use the raw
/// `export!` macro and host imports directly.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.1.3",
        world: "kata:plugin/channel-plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "kata_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });

    /// Bindings for the optional `channel-batch` export (what the world
    /// `channel-batch-plugin` adds to `channel-plugin`), sharing every type
    /// with the parent module.
    ///
    /// A world of its own (`kata:sdk/batch`, exporting only
    /// `kata:plugin/channel-batch`) rather than `channel-batch-plugin`:
    /// wit-bindgen generates every export of a world, and a second `channel`
    /// export would clash with the parent's. The component gets the union of
    /// both worlds — `channel-batch-plugin` — and only when
    /// `export_channel!(T, batch)` invokes this module's `export!`: a plugin
    /// exported with plain [`export_channel!`](crate::export_channel) does
    /// not export `channel-batch`.
    pub mod batch {
        wit_bindgen::generate!({
            inline: "package kata:sdk; world batch { export kata:plugin/channel-batch@0.1.3; }",
            path: "../../wit/v0.1.3",
            world: "kata:sdk/batch",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "kata_sdk::bindings::batch",
            with: { "kata:plugin/types@0.1.3": crate::bindings::kata::plugin::types },
            // Nothing of this module is linked into a plugin that does not
            // use it (the byte-for-byte build of a plain channel); `export!`
            // records the world where it is invoked.
            disable_custom_section_link_helpers: true,
        });
    }
}

pub use bindings::exports::kata::plugin::channel::{
    ChannelAction, ChannelInfo, Edit, Feature, FrameResult, IngressMode, PollResult, Reaction, StreamKind, Subscription, Target,
};
pub use bindings::kata::plugin::types::{
    Action, Attachment, ChannelError, ConversationKind, Frame, LogLevel, Message, OutboundAttachment, OutboundMessage, SendReceipt,
};

/// The version of the WIT contract (`kata:plugin@0.1.3`) this SDK targets.
///
/// [`export_channel!`] stores it in the plugin's `kata:wit-version` custom
/// section as plain UTF-8 bytes.
pub const WIT_VERSION: &str = "0.1.3";

impl ChannelInfo {
    /// A channel's facts with no [`features`](ChannelInfo::features) (add
    /// them with [`ChannelInfo::with_features`]).
    pub fn new(name: impl Into<String>, version: impl Into<String>, ingress: Vec<IngressMode>) -> ChannelInfo {
        ChannelInfo { name: name.into(), version: version.into(), ingress, features: Vec::new() }
    }

    /// The same facts, listing `features`: what [`Channel::act`] and
    /// [`Channel::send`] support. The host uses only what is listed.
    pub fn with_features(self, features: Vec<Feature>) -> ChannelInfo {
        ChannelInfo { features, ..self }
    }
}

impl Message {
    /// A plain text message in a direct conversation (no thread, attachments
    /// or raw payload), stamped with the host's clock. `id` must be unique
    /// within the plugin: the host stores a message id once. Use
    /// [`Message::in_group`] for a group conversation.
    pub fn text(id: impl Into<String>, conversation: impl Into<String>, sender: impl Into<String>, text: impl Into<String>) -> Message {
        Message {
            id: id.into(),
            conversation: conversation.into(),
            thread: None,
            sender: sender.into(),
            sender_name: None,
            text: text.into(),
            attachments: Vec::new(),
            // Natively (unit tests) there is no host clock.
            timestamp_ms: if cfg!(target_family = "wasm") { now_ms() } else { 0 },
            raw: None,
            conversation_kind: ConversationKind::Direct,
            mentioned: false,
        }
    }

    /// The same message, marked as posted in a group conversation; `mentioned`
    /// says whether it addresses the agent (mentions the bot or replies to it).
    pub fn in_group(self, mentioned: bool) -> Message {
        Message { conversation_kind: ConversationKind::Group, mentioned, ..self }
    }

    /// The same message, marked as addressing the agent.
    pub fn mentioning(self) -> Message {
        Message { mentioned: true, ..self }
    }
}

impl SendReceipt {
    /// A message the plugin delivered itself (over HTTP, say), with the
    /// network's id for it (empty when it gives none).
    pub fn sent(id: impl Into<String>) -> SendReceipt {
        SendReceipt { id: id.into(), frames: Vec::new() }
    }

    /// A message delivered by the host writing `frames` to the plugin's open
    /// stream (e.g. IRC `PRIVMSG` lines). When no stream is open the host
    /// retries the message later.
    pub fn over_stream(id: impl Into<String>, frames: Vec<Frame>) -> SendReceipt {
        SendReceipt { id: id.into(), frames }
    }
}

impl Frame {
    /// A text frame (a line, for `tcp-lines` streams, without its `\r\n`).
    pub fn text(text: impl Into<String>) -> Frame {
        Frame::Text(text.into())
    }

    /// The text of a text frame; `None` for a binary one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t),
            Frame::Binary(_) => None,
        }
    }

    /// Whether this is the host's heartbeat tick (an empty text frame, sent
    /// every [`Subscription::heartbeat_ms`]).
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Frame::Text(t) if t.is_empty())
    }
}

impl Subscription {
    fn new(kind: StreamKind, url: impl Into<String>) -> Subscription {
        Subscription { kind, url: url.into(), headers: Vec::new(), initial_frames: Vec::new(), heartbeat_ms: None }
    }

    /// A line-oriented TCP or TLS connection: `tcp://host:port`,
    /// `tls://host:port`, `irc://host[:port]` or `ircs://host[:port]`.
    pub fn tcp_lines(url: impl Into<String>) -> Subscription {
        Subscription::new(StreamKind::TcpLines, url)
    }

    /// A websocket (`ws://` or `wss://`).
    pub fn websocket(url: impl Into<String>) -> Subscription {
        Subscription::new(StreamKind::Websocket, url)
    }

    /// Server-sent events (`http://` or `https://`).
    pub fn server_sent_events(url: impl Into<String>) -> Subscription {
        Subscription::new(StreamKind::ServerSentEvents, url)
    }

    /// An HTTP listener for webhooks on a local address, e.g.
    /// `http://127.0.0.1:8787/hook` (it must be granted in kata.toml).
    pub fn webhook(url: impl Into<String>) -> Subscription {
        Subscription::new(StreamKind::Webhook, url)
    }

    /// Add a handshake header (websocket, SSE); `{{secret:NAME}}` allowed.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Subscription {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Add a frame to send right after connecting.
    pub fn initial(mut self, frame: Frame) -> Subscription {
        self.initial_frames.push(frame);
        self
    }

    /// Have the host call `on_frame` with a heartbeat tick every `ms` milliseconds.
    pub fn heartbeat(mut self, ms: u32) -> Subscription {
        self.heartbeat_ms = Some(ms);
        self
    }
}

impl Default for FrameResult {
    fn default() -> FrameResult {
        FrameResult { messages: Vec::new(), replies: Vec::new() }
    }
}

impl FrameResult {
    /// Frames to write back (e.g. a `PONG`), no messages.
    pub fn reply(replies: Vec<Frame>) -> FrameResult {
        FrameResult { messages: Vec::new(), replies }
    }

    /// Messages for the inbox, nothing to write back.
    pub fn messages(messages: Vec<Message>) -> FrameResult {
        FrameResult { messages, replies: Vec::new() }
    }
}

/// The current wall-clock time in milliseconds since the Unix epoch, as the
/// host sees it.
pub fn now_ms() -> u64 {
    bindings::kata::plugin::host::now_ms()
}

/// Everything a channel plugin usually needs, for `use kata_sdk::prelude::*`.
pub mod prelude {
    pub use crate::http::{self, HttpError, Request, Response};
    pub use crate::net::{self, Connection, ConnectionError};
    pub use crate::{
        Action, Attachment, BatchSend, Channel, ChannelAction, ChannelError, ChannelInfo, ConversationKind, Feature, Frame, FrameResult,
        IngressMode, Message, OutboundAttachment, OutboundMessage, PollResult, SendReceipt, StreamKind, Subscription, config, log, now_ms,
        state,
    };
}

/// A channel plugin: the Rust face of the WIT interface `kata:plugin/channel`.
///
/// The host creates plugin instances as it likes (after a crash, a reload, or
/// to send while another instance polls). Per instance it calls
/// [`describe`](Channel::describe) at any time and [`connect`](Channel::connect)
/// once before anything else; the value `connect` returns receives every
/// further call until [`disconnect`](Channel::disconnect). Calls never overlap.
/// Keep anything that must outlive an instance in the poll cursor or in
/// [`state`].
///
/// Export an implementation with [`export_channel!`].
pub trait Channel: Sized + 'static {
    /// Static facts about the plugin. Must not fail or use the network.
    fn describe() -> ChannelInfo;

    /// Read configuration ([`config`]), check credentials if that is cheap, and
    /// build the value that handles the following calls.
    fn connect() -> Result<Self, ChannelError>;

    /// Fetch messages newer than `cursor` (`None` on the very first poll).
    ///
    /// Return the new cursor in [`PollResult::cursor`] (`None` keeps the
    /// current one). Long polling is fine; the host bounds each call.
    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError>;

    /// Ask the host to open a stream. The default says the plugin only polls.
    fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    /// Handle one frame of the stream opened for [`subscribe`](Channel::subscribe).
    /// The default says the plugin only polls.
    fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
        let _ = frame;
        Err(ChannelError::Unsupported)
    }

    /// Deliver one message. Return [`ChannelError::RateLimited`] or
    /// [`ChannelError::Network`] to have the host retry it later.
    ///
    /// [`OutboundMessage::attachments`] and [`OutboundMessage::actions`]
    /// arrive only when [`describe`](Channel::describe) lists
    /// [`Feature::Attachments`] and [`Feature::Buttons`]; otherwise the host
    /// has already turned them into lines of the text.
    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError>;

    /// Do `action` (show typing, edit a sent message, react): one of the
    /// [`features`](ChannelInfo::features) `describe` lists. The host asks
    /// only for listed features; the default supports none.
    fn act(&mut self, action: ChannelAction) -> Result<(), ChannelError> {
        let _ = action;
        Err(ChannelError::Unsupported)
    }

    /// The instance is about to be dropped. The default does nothing.
    fn disconnect(&mut self) {}
}

/// A [`Channel`] that also delivers several messages in one call: the Rust
/// face of the optional WIT interface `kata:plugin/channel-batch`
/// (`wit/v0.1.3/channel-batch.wit`).
///
/// Worth it for a network where many messages cost less together than one
/// by one: an API that takes a list, or a protocol with an expensive session
/// (SMTP: one connection, TLS handshake and login for the whole batch).
/// Export it with `export_channel!(T, batch)`; a channel exported without
/// `batch` is sent to with [`Channel::send`] only.
///
/// # What the host does, and what `self` can rely on
///
/// - The host calls `send_batch` on a *send* instance — never on the one
///   that polls or holds the stream — and the same `self` receives that
///   instance's [`send`](Channel::send) calls: the value
///   [`connect`](Channel::connect) built, as for every other call. Calls
///   never overlap, so a connection kept in `self` is usable across
///   `send_batch` and `send` calls. Several send instances (lanes, see
///   `limits.concurrent_sends`) may run at once, each with its own value;
///   one conversation's messages always go to the same one.
/// - It calls `send_batch` only with two or more due messages (at most 32),
///   in order: one conversation's messages keep their order in the list. A
///   single due message goes to `send`, as does a reply that finishes a
///   streamed draft. Attachments and buttons arrive only when
///   [`describe`](Channel::describe) lists their features, as for `send`.
/// - Return one result per message, in the same order. Only the messages
///   with an error are retried (later, with the same
///   [`idempotency_key`](OutboundMessage::idempotency_key), with the backoff
///   and dead-lettering of `send`). A shorter list leaves the rest unsent:
///   they are retried as after a [`ChannelError::Network`] error.
/// - An error for the whole call counts for every message, except
///   [`ChannelError::Unsupported`]: "not now" — that instance's lane sends
///   those messages, and later ones, with `send` until the daemon restarts or
///   reloads the plugin (for a configuration that points at an API without
///   batches).
/// - After a crash the host may repeat the last batch a send instance had in
///   flight: pass each message's idempotency key on where the network takes
///   one.
/// - An instance can be dropped and replaced at any time (after a trap, an
///   error that breaks it, or when idle): keep anything that must outlive it
///   in [`state`].
///
/// # Example
///
/// ```no_run
/// use kata_sdk::prelude::*;
///
/// /// Posts replies to an API that takes up to 100 messages per request.
/// struct Bulk {
///     base: String,
/// }
///
/// impl Channel for Bulk {
///     fn describe() -> ChannelInfo {
///         ChannelInfo::new("bulk", "0.1.0", vec![IngressMode::Poll])
///     }
///     fn connect() -> Result<Self, ChannelError> {
///         Ok(Bulk { base: config::require("base")? })
///     }
///     fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
///         Ok(PollResult { messages: vec![], cursor, next_poll_ms: None })
///     }
///     fn send(&mut self, msg: OutboundMessage) -> Result<SendReceipt, ChannelError> {
///         let mut results = self.send_batch(vec![msg])?;
///         results.pop().unwrap_or(Err(ChannelError::Network("no result".into())))
///     }
/// }
///
/// impl BatchSend for Bulk {
///     fn send_batch(&mut self, messages: Vec<OutboundMessage>) -> Result<Vec<Result<SendReceipt, ChannelError>>, ChannelError> {
///         let lines: Vec<String> = messages.iter().map(|m| format!("{} {} {}", m.idempotency_key, m.conversation, m.text)).collect();
///         let resp = Request::post(format!("{}/messages", self.base)).body(lines.join("\n")).send()?;
///         if !resp.is_success() {
///             return Err(ChannelError::Network(format!("the API answered {}", resp.status)));
///         }
///         // One line per message: its id, or "error: why".
///         let text = String::from_utf8_lossy(&resp.body).into_owned();
///         Ok(text
///             .lines()
///             .map(|l| match l.strip_prefix("error: ") {
///                 Some(why) => Err(ChannelError::Network(why.to_string())),
///                 None => Ok(SendReceipt::sent(l)),
///             })
///             .collect())
///     }
/// }
///
/// kata_sdk::export_channel!(Bulk, batch);
/// ```
pub trait BatchSend: Channel {
    /// Deliver `messages`, in order; one result per message, in the same
    /// order (see the trait's documentation for what the host does with
    /// them).
    fn send_batch(&mut self, messages: Vec<OutboundMessage>) -> Result<Vec<Result<SendReceipt, ChannelError>>, ChannelError>;
}

/// Export a [`Channel`] implementation as the plugin's `kata:plugin/channel`
/// (and, with `batch`, a [`BatchSend`] one as `kata:plugin/channel-batch`).
///
/// Invoke it once, at the top level of the plugin crate:
///
/// ```ignore
/// kata_sdk::export_channel!(MyChannel);
/// // or, for a channel that also implements BatchSend:
/// kata_sdk::export_channel!(MyChannel, batch);
/// ```
///
/// The expansion
/// - defines the component exports that forward to `MyChannel`, keeping the
///   value built by [`Channel::connect`] for the lifetime of the instance (if
///   the host calls anything before `connect`, `connect` runs first); with
///   `batch`, `send-batch` goes to [`BatchSend::send_batch`] on that same
///   value;
/// - places a custom section `kata:wit-version` holding the UTF-8 bytes of
///   [`WIT_VERSION`] into the plugin (wasm targets only).
///
/// Without `batch` the plugin exports exactly the world `channel-plugin`;
/// with it, `channel-batch-plugin`.
#[macro_export]
macro_rules! export_channel {
    ($ty:ty) => {
        const _: () = {
            $crate::__export_channel_items!($ty);
    $crate::bindings::export!(KataChannelExport with_types_in $crate::bindings);
        };
    };
    ($ty:ty, batch) => {
        const _: () = {
            $crate::__export_channel_items!($ty);

            impl $crate::__private::BatchGuest for KataChannelExport {
                fn send_batch(
                    messages: ::std::vec::Vec<$crate::OutboundMessage>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<::core::result::Result<$crate::SendReceipt, $crate::ChannelError>>,
                    $crate::ChannelError,
                > {
                    $crate::__private::with_instance::<$ty, _>(&INSTANCE, |c| <$ty as $crate::BatchSend>::send_batch(c, messages))
                }
            }

    $crate::bindings::export!(KataChannelExport with_types_in $crate::bindings);
    $crate::bindings::batch::export!(KataChannelExport with_types_in $crate::bindings::batch);
        };
    };
}

/// The items [`export_channel!`] defines for `$ty` (inside its `const _`
/// block): the version section, the instance slot `INSTANCE` and the export
/// type `KataChannelExport` with its `channel` implementation. Not a stable
/// API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_channel_items {
    ($ty:ty) => {
        /// The WIT contract version this plugin was built against.
        #[cfg(target_family = "wasm")]
        #[used]
        #[unsafe(link_section = "kata:wit-version")]
        static KATA_WIT_VERSION: [u8; $crate::WIT_VERSION.len()] = $crate::__private::wit_version_bytes();

        ::std::thread_local! {
            static INSTANCE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        struct KataChannelExport;

        impl $crate::__private::Guest for KataChannelExport {
            fn describe() -> $crate::ChannelInfo {
                <$ty as $crate::Channel>::describe()
            }
            fn connect() -> ::core::result::Result<(), $crate::ChannelError> {
                $crate::__private::connect::<$ty>(&INSTANCE)
            }
            fn poll(
                cursor: ::core::option::Option<::std::string::String>,
            ) -> ::core::result::Result<$crate::PollResult, $crate::ChannelError> {
                $crate::__private::with_instance::<$ty, _>(&INSTANCE, |c| c.poll(cursor))
            }
            fn subscribe() -> ::core::result::Result<$crate::Subscription, $crate::ChannelError> {
                $crate::__private::with_instance::<$ty, _>(&INSTANCE, |c| c.subscribe())
            }
            fn on_frame(frame: $crate::Frame) -> ::core::result::Result<$crate::FrameResult, $crate::ChannelError> {
                $crate::__private::with_instance::<$ty, _>(&INSTANCE, |c| c.on_frame(frame))
            }
            fn send(message: $crate::OutboundMessage) -> ::core::result::Result<$crate::SendReceipt, $crate::ChannelError> {
                $crate::__private::with_instance::<$ty, _>(&INSTANCE, |c| c.send(message))
            }
            fn act(action: $crate::ChannelAction) -> ::core::result::Result<(), $crate::ChannelError> {
                $crate::__private::with_instance::<$ty, _>(&INSTANCE, |c| c.act(action))
            }
            fn disconnect() {
                $crate::__private::disconnect::<$ty>(&INSTANCE)
            }
        }
    };
}

/// Implementation details of [`export_channel!`]. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use crate::{Channel, ChannelError};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use crate::bindings::batch::exports::kata::plugin::channel_batch::Guest as BatchGuest;
    pub use crate::bindings::exports::kata::plugin::channel::Guest;

    /// Where the macro keeps the connected channel value.
    pub type Slot<T> = LocalKey<RefCell<Option<T>>>;

    /// [`crate::WIT_VERSION`] as a byte array, for the custom section.
    pub const fn wit_version_bytes<const N: usize>() -> [u8; N] {
        let src = crate::WIT_VERSION.as_bytes();
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N && i < src.len() {
            out[i] = src[i];
            i += 1;
        }
        out
    }

    /// `connect`: build a fresh value, dropping (and disconnecting) an old one.
    pub fn connect<T: Channel>(slot: &'static Slot<T>) -> Result<(), ChannelError> {
        disconnect(slot);
        let value = T::connect()?;
        slot.with(|cell| *cell.borrow_mut() = Some(value));
        Ok(())
    }

    /// Run `f` on the connected value, connecting first if needed.
    pub fn with_instance<T: Channel, R>(
        slot: &'static Slot<T>,
        f: impl FnOnce(&mut T) -> Result<R, ChannelError>,
    ) -> Result<R, ChannelError> {
        slot.with(|cell| {
            let mut guard = cell.borrow_mut();
            let value = match guard.as_mut() {
                Some(value) => value,
                None => guard.insert(T::connect()?),
            };
            f(value)
        })
    }

    /// `disconnect`: let the value clean up, then drop it.
    pub fn disconnect<T: Channel>(slot: &'static Slot<T>) {
        let old = slot.with(|cell| cell.borrow_mut().take());
        if let Some(mut value) = old {
            value.disconnect();
        }
    }
}
