//! A client's TCP stream, after the PROXY protocol header (if any) has been read off it.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::{
    TrustedProxies,
    protocol::{self, InvalidHeader, MAX_HEADER_BYTES, Parsed},
};

/// Longest a trusted balancer may take to send its PROXY header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection's stream: the bytes read past the PROXY header first, then the socket.
pub struct ClientStream {
    io: TcpStream,
    /// Bytes of the connection that arrived with the header, not yet read.
    early: Option<Box<[u8]>>,
    early_read: usize,
}

/// Why a connection was closed before its first request.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The socket failed or closed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    /// A trusted balancer sent no valid header in time.
    #[error("no PROXY header within {HEADER_TIMEOUT:?}")]
    TimedOut,
    /// What a trusted balancer sent is not a PROXY header.
    #[error(transparent)]
    Invalid(#[from] InvalidHeader),
}

/// The `reason` of every refusal [`AcceptError::reason`] names.
pub const REFUSAL_REASONS: [&str; 4] = ["missing", "too-long", "malformed", "timeout"];

impl AcceptError {
    /// What a trusted balancer did wrong, for metrics; `None` when the socket failed on its
    /// own.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Io(_) => None,
            Self::Invalid(InvalidHeader::Missing) => Some(REFUSAL_REASONS[0]),
            Self::Invalid(InvalidHeader::TooLong) => Some(REFUSAL_REASONS[1]),
            Self::Invalid(InvalidHeader::Malformed(_)) => Some(REFUSAL_REASONS[2]),
            Self::TimedOut => Some(REFUSAL_REASONS[3]),
        }
    }
}

/// Takes a new connection: with `proxy_protocol`, one from a trusted balancer must start with
/// a PROXY header, which names the client; others are read as they come. Returns the stream
/// and the address the connection is from.
pub async fn accept(
    io: TcpStream,
    proxy_protocol: bool,
    trusted: &TrustedProxies,
) -> Result<(ClientStream, SocketAddr), AcceptError> {
    let _ = io.set_nodelay(true);
    let peer = io.peer_addr()?;
    if !proxy_protocol || !trusted.trusts(peer.ip()) {
        return Ok((ClientStream::new(io, None), peer));
    }
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(io)).await {
        Ok(Ok((stream, source))) => Ok((stream, source.unwrap_or(peer))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(AcceptError::TimedOut),
    }
}

/// Reads until the header is whole; what came after it is kept for the first reads.
async fn read_header(io: TcpStream) -> Result<(ClientStream, Option<SocketAddr>), AcceptError> {
    let mut bytes = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        io.readable().await?;
        match io.try_read(&mut chunk) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        match protocol::parse(&bytes)? {
            Parsed::Incomplete if bytes.len() < MAX_HEADER_BYTES => continue,
            Parsed::Incomplete => return Err(InvalidHeader::TooLong.into()),
            Parsed::Header { len, source } => {
                let early = (bytes.len() > len).then(|| bytes[len..].into());
                return Ok((ClientStream::new(io, early), source));
            }
        }
    }
}

impl ClientStream {
    fn new(io: TcpStream, early: Option<Box<[u8]>>) -> Self {
        Self {
            io,
            early,
            early_read: 0,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(early) = &this.early {
            let rest = &early[this.early_read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.early_read += n;
            if this.early_read == early.len() {
                this.early = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
