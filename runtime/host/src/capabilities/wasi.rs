//! The WASI imports a scenario gets: clocks and randomness as usual, stdout
//! and stderr into the session log line by line, and nothing else. No
//! filesystem (no preopens), no environment, no arguments, no sockets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView};

use super::{Common, Factor, SessionContext, WasiStore};
use crate::log::{LogSource, SessionLog};

pub struct Wasi {
    ctx: WasiCtx,
}

impl HasData for Wasi {
    type Data<'a> = WasiCtxView<'a>;
}

impl Factor for Wasi {
    type View = Wasi;

    fn new(cx: &SessionContext<'_>) -> Self {
        let output = |source| GuestOutput {
            log: cx.log.clone(),
            source,
        };
        let ctx = WasiCtx::builder()
            .stdout(output(LogSource::Stdout))
            .stderr(output(LogSource::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Wasi { ctx }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> WasiCtxView<'a> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: common.table,
        }
    }

    /// wasmtime-wasi links through its own view of the store.
    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        _get: fn(&mut T) -> WasiCtxView<'_>,
    ) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)
    }
}

/// A guest's stdout or stderr: complete lines go to the session log.
struct GuestOutput {
    log: SessionLog,
    source: LogSource,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl GuestOutput {
    fn lines(&self) -> LineWriter {
        LineWriter {
            log: self.log.clone(),
            source: self.source,
            partial: Vec::new(),
        }
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.lines())
    }

    /// Written synchronously, unlike the default (a buffer drained by a
    /// task): a printed line lands in the log in order with the scenario's
    /// `logger.write` lines, and no task is spawned per stream.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.lines())
    }
}

/// Bytes of an unfinished line kept before it is logged anyway: a guest that
/// prints without newlines cannot make the host buffer without end.
const MAX_PARTIAL_LINE: usize = 64 << 10;

/// Splits a byte stream into lines; a last line without a newline is logged
/// when the stream is shut down or dropped.
struct LineWriter {
    log: SessionLog,
    source: LogSource,
    partial: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.log.write(self.source, &String::from_utf8_lossy(line));
    }

    fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(newline);
            if self.partial.is_empty() {
                self.emit(line);
            } else {
                self.partial.extend_from_slice(line);
                self.flush_partial();
            }
            rest = &tail[1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_PARTIAL_LINE {
            self.flush_partial();
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            self.emit(&partial);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Pollable for LineWriter {
    /// Always ready: writes go straight to the log.
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_PARTIAL_LINE)
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_partial();
    }
}
