//! `kata:plugin/connections`: request/response connections over TCP or TLS
//! for protocols that are not HTTP (SMTP, IMAP, XMPP), checked like HTTP.

use wasmtime::component::Resource;

use crate::host::PluginCtx;
use crate::host::v0_1_3::bindings::kata::plugin::connections::{self, ConnectionError};

/// One open connection, an entry in the instance's resource table.
pub struct Connection {
    _private: (),
}

impl connections::Host for PluginCtx {}

impl connections::HostConnection for PluginCtx {
    async fn open(&mut self, url: String, timeout_ms: u32) -> wasmtime::Result<Result<Resource<Connection>, ConnectionError>> {
        let _ = (url, timeout_ms);
        Ok(Err(ConnectionError::Io("connections are not implemented yet".into())))
    }

    async fn write(&mut self, conn: Resource<Connection>, data: Vec<u8>) -> wasmtime::Result<Result<(), ConnectionError>> {
        let _ = (conn, data);
        Ok(Err(ConnectionError::Closed))
    }

    async fn read_line(&mut self, conn: Resource<Connection>, timeout_ms: u32) -> wasmtime::Result<Result<String, ConnectionError>> {
        let _ = (conn, timeout_ms);
        Ok(Err(ConnectionError::Closed))
    }

    async fn read(&mut self, conn: Resource<Connection>, max: u32, timeout_ms: u32) -> wasmtime::Result<Result<Vec<u8>, ConnectionError>> {
        let _ = (conn, max, timeout_ms);
        Ok(Err(ConnectionError::Closed))
    }

    async fn start_tls(&mut self, conn: Resource<Connection>, timeout_ms: u32) -> wasmtime::Result<Result<(), ConnectionError>> {
        let _ = (conn, timeout_ms);
        Ok(Err(ConnectionError::Closed))
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.table().delete(conn)?;
        Ok(())
    }
}
