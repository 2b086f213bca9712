//! The native echo, run once per message by the bench's `process` rows:
//! `native-echo noop`, `native-echo echo` (stdin to stdout), `native-echo
//! http URL` (the body of a GET on stdout). The same code as the bench's
//! `native` rows ([`kata_peers::native`]).

use std::io::{Read, Write};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = match args.get(1).map(String::as_str) {
        Some("noop") => kata_peers::native::noop(),
        Some("echo") => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            kata_peers::native::echo(&input)
        }
        Some("http") => kata_peers::native::get_once(args.get(2).map(String::as_str).unwrap_or_default())?,
        _ => return Err(std::io::Error::other("usage: native-echo noop|echo|http URL")),
    };
    std::io::stdout().write_all(&out)
}
