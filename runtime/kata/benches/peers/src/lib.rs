//! What the peers bench shares between its binaries: the work done natively
//! (no sandbox) and the loopback HTTP server every side's `http` work talks to.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// The body the loopback server answers every GET with.
pub const BODY: &str = "[]";

/// A keep-alive HTTP/1.1 server on 127.0.0.1, one thread per connection,
/// answering every request `200` with [`BODY`]. Returns its port. It serves
/// every side alike; a client that opens a connection per request also pays
/// for the server's thread per connection (as it would pay a real server's
/// accept), which the `native (new connection)` row shows on its own.
pub fn start_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read);
    loop {
        let Some(len) = read_head(&mut reader) else { return };
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let out = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}", BODY.len());
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// Read a request or response head; its content-length (None at EOF).
fn read_head(reader: &mut impl BufRead) -> Option<usize> {
    let mut len = 0usize;
    let mut first = true;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() && !first {
            return Some(len);
        }
        first = false;
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
}

/// The native version of the guests' work, compiled into the bench and
/// into `native-echo`: no sandbox, no WebAssembly.
pub mod native {
    use super::*;

    /// `noop`.
    #[inline(never)]
    pub fn noop() -> Vec<u8> {
        Vec::new()
    }

    /// `echo`: the input, returned as a new owned buffer (every WebAssembly
    /// side copies the result out of the guest's memory too).
    #[inline(never)]
    pub fn echo(input: &[u8]) -> Vec<u8> {
        input.to_vec()
    }

    /// An HTTP/1.1 client over one kept-open connection (what kata's
    /// connection pool gives its plugins).
    pub struct Client {
        host: String,
        stream: TcpStream,
        reader: BufReader<TcpStream>,
    }

    impl Client {
        /// Connect to `127.0.0.1:port`.
        pub fn connect(port: u16) -> std::io::Result<Self> {
            let stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nodelay(true)?;
            let reader = BufReader::new(stream.try_clone()?);
            Ok(Self { host: format!("127.0.0.1:{port}"), stream, reader })
        }

        /// `GET path`: the body.
        pub fn get(&mut self, path: &str) -> std::io::Result<Vec<u8>> {
            let req = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.host);
            self.stream.write_all(req.as_bytes())?;
            let len = read_head(&mut self.reader).ok_or_else(|| std::io::Error::other("connection closed"))?;
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body)?;
            Ok(body)
        }
    }

    /// `http`: GET `http://127.0.0.1:PORT/PATH` on a new connection.
    pub fn get_once(url: &str) -> std::io::Result<Vec<u8>> {
        let rest = url.strip_prefix("http://").ok_or_else(|| std::io::Error::other("http:// URL expected"))?;
        let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let port = authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(80);
        Client::connect(port)?.get(&path)
    }
}
