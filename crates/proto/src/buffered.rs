//! TCP with a read buffer, for connections that carry TLS. rustls reads from its transport
//! 4 KiB at a time (its deframer's read size) and resizes its buffer around every record, so
//! a 64 KiB gRPC message arriving over TLS cost 16 or more `read` system calls; plaintext
//! HTTP/2 reads the same bytes in one or two. Beneath TLS, [`BufferedTcp`] takes what the
//! socket holds in one call (up to [`READ_BUFFER_BYTES`]) and serves rustls's small reads from
//! memory. Writes pass straight through (rustls already writes records in vectored batches).
//!
//! Servers accept with [`incoming`] (buffered when they serve TLS, straight from the socket
//! otherwise); clients connect with [`BufferedConnector`] (through
//! [`crate::Credentials::connect_lazy`], under TLS only).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::Uri;

/// Bytes read from the socket at most at once (the largest TLS record is 16 KiB and change;
/// a 64 KiB message is four of them).
pub const READ_BUFFER_BYTES: usize = 64 << 10;

/// A TCP stream, read through a buffer beneath TLS and straight from the socket otherwise.
/// `TCP_NODELAY` is set by whoever made it.
#[derive(Debug)]
pub struct BufferedTcp(Transport);

#[derive(Debug)]
enum Transport {
    Buffered(BufReader<TcpStream>),
    // Not a buffer of 0 bytes: tokio's `BufReader` refuses that capacity (it panicked on every
    // connection an `--insecure` server accepted).
    Plain(TcpStream),
}

/// `$e` with `$s` bound to whichever stream it is.
macro_rules! on_stream {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.0 {
            Transport::Buffered($s) => $e,
            Transport::Plain($s) => $e,
        }
    };
}

impl BufferedTcp {
    /// `stream` read through a buffer of [`READ_BUFFER_BYTES`].
    pub fn new(stream: TcpStream) -> BufferedTcp {
        BufferedTcp(Transport::Buffered(BufReader::with_capacity(
            READ_BUFFER_BYTES,
            stream,
        )))
    }

    /// `stream` read straight from the socket.
    fn plain(stream: TcpStream) -> BufferedTcp {
        BufferedTcp(Transport::Plain(stream))
    }

    fn tcp(&self) -> &TcpStream {
        match &self.0 {
            Transport::Buffered(b) => b.get_ref(),
            Transport::Plain(s) => s,
        }
    }
}

impl AsyncRead for BufferedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for BufferedTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp().is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// What a server learns of the connection: the same as for a plain TCP stream (the TLS layer
/// on top adds the peer's certificates).
impl Connected for BufferedTcp {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// The connections `listener` accepts, with `TCP_NODELAY` (small responses must not wait for
/// delayed ACKs; tonic's builder option applies only to listeners it binds itself), each read
/// through a buffer when the server speaks TLS (`tls`), straight from the socket otherwise.
pub fn incoming(listener: TcpListener, tls: bool) -> impl Stream<Item = io::Result<BufferedTcp>> {
    let wrap = if tls {
        BufferedTcp::new
    } else {
        BufferedTcp::plain
    };
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(wrap))
}

/// Connects to an endpoint's `host:port` with `TCP_NODELAY`, read through a buffer; tonic puts
/// TLS on top and applies the endpoint's connect timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedConnector;

impl tower::Service<Uri> for BufferedConnector {
    type Response = TokioIo<BufferedTcp>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let invalid = |what: &str| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no {what}"))
            };
            // An IPv6 literal comes bracketed in a URI, not in a socket address.
            let host = uri
                .host()
                .ok_or_else(|| invalid("host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("port"))?;
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(BufferedTcp::new(stream)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tower::Service as _;

    #[tokio::test]
    async fn bytes_pass_both_ways_buffered_or_not() {
        for tls in [true, false] {
            pass_bytes(tls).await;
        }
    }

    /// A connection accepted by a server that speaks TLS (`tls`: buffered) or not carries
    /// bytes both ways, read in small pieces.
    async fn pass_bytes(tls: bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, tls));
        let uri: Uri = format!("http://{addr}").parse().unwrap();
        let client = tokio::spawn(async move {
            let mut c = BufferedConnector.call(uri).await.unwrap().into_inner();
            c.write_all(&[7u8; 100_000]).await.unwrap();
            let mut back = [0u8; 3];
            c.read_exact(&mut back).await.unwrap();
            back
        });
        let mut server = accepted.next().await.unwrap().unwrap();
        assert_eq!(
            server.connect_info().remote_addr().map(|a| a.ip()),
            Some(addr.ip())
        );
        let mut got = vec![0u8; 100_000];
        for chunk in got.chunks_mut(4096) {
            server.read_exact(chunk).await.unwrap();
        }
        assert!(got.iter().all(|b| *b == 7));
        server.write_all(b"ok!").await.unwrap();
        assert_eq!(&client.await.unwrap(), b"ok!");
    }
}
