//! Test guest `guest-socket-probe`: each `poll` tries the raw socket
//! interfaces of WASI 0.2 — a TCP connect to 127.0.0.1 on config `port`, a
//! UDP bind, and a name lookup of `localhost` — and returns one message whose
//! text lists each outcome, e.g. `tcp=err:access-denied udp=… dns=…`. kata
//! grants no raw sockets (network grants are for HTTP and host-managed
//! streams), so every one must fail.

use kata_sdk::prelude::*;
use wasi::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};

/// The probing channel.
pub struct SocketProbe {
    port: u16,
}

fn code(e: ErrorCode) -> String {
    format!("err:{}", format!("{e:?}").to_ascii_lowercase())
}

fn tcp(port: u16) -> String {
    let net = wasi::sockets::instance_network::instance_network();
    let sock = match wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
        Ok(s) => s,
        Err(e) => return code(e),
    };
    let addr = IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address: (127, 0, 0, 1) });
    if let Err(e) = sock.start_connect(&net, addr) {
        return code(e);
    }
    sock.subscribe().block();
    match sock.finish_connect() {
        Ok(_) => "connected".into(),
        Err(e) => code(e),
    }
}

fn udp() -> String {
    let net = wasi::sockets::instance_network::instance_network();
    let sock = match wasi::sockets::udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4) {
        Ok(s) => s,
        Err(e) => return code(e),
    };
    let addr = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 0, address: (127, 0, 0, 1) });
    if let Err(e) = sock.start_bind(&net, addr) {
        return code(e);
    }
    sock.subscribe().block();
    match sock.finish_bind() {
        Ok(()) => "bound".into(),
        Err(e) => code(e),
    }
}

fn dns() -> String {
    let net = wasi::sockets::instance_network::instance_network();
    let stream = match wasi::sockets::ip_name_lookup::resolve_addresses(&net, "localhost") {
        Ok(s) => s,
        Err(e) => return code(e),
    };
    loop {
        match stream.resolve_next_address() {
            Ok(Some(_)) => return "resolved".into(),
            Ok(None) => return "empty".into(),
            Err(ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(e) => return code(e),
        }
    }
}

impl Channel for SocketProbe {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "socket-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        let port = config::require("port")?.parse().map_err(|_| ChannelError::InvalidConfig("port".into()))?;
        Ok(SocketProbe { port })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let text = format!("tcp={} udp={} dns={}", tcp(self.port), udp(), dns());
        Ok(PollResult {
            messages: vec![Message::text(format!("probe-{}", now_ms()), "probe", "socket-probe", text)],
            cursor: None,
            next_poll_ms: None,
        })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt::sent(message.idempotency_key))
    }
}

kata_sdk::export_channel!(SocketProbe);
