//! A signalling client: a WebSocket to the host speaking the OME protocol's JSON.

use anyhow::{anyhow, Context};
use futures_util::{SinkExt, StreamExt};
use ome_signalling::messages::PlayerMessage;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A desktop Windows Chrome User-Agent: host-eligible.
pub const CHROME_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

/// One signalling connection.
pub struct Signal {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The code of the close frame the host sent, once it sent one.
    pub close_code: Option<u16>,
}

/// What the host sent: a JSON message, or the socket closing.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A JSON text message.
    Json(Value),
    /// The socket closed.
    Closed,
}

impl Signal {
    /// Connects to `url` with `user_agent` in the upgrade request.
    pub async fn connect(url: &str, user_agent: &str) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("User-Agent", user_agent.parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await.with_context(|| format!("connecting {url}"))?;
        Ok(Self { ws, close_code: None })
    }

    /// Connects to a `wss://` `url` with `user_agent`, trusting the roots of `tls` (e.g. a test
    /// CA) instead of the system's.
    pub async fn connect_tls(url: &str, user_agent: &str, tls: std::sync::Arc<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("User-Agent", user_agent.parse()?);
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
            .await
            .with_context(|| format!("connecting {url}"))?;
        Ok(Self { ws, close_code: None })
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.send_text(&message.to_string()).await
    }

    /// Sends a protocol message.
    pub async fn send_message(&mut self, message: &PlayerMessage) -> anyhow::Result<()> {
        self.send_text(&message.to_json()).await
    }

    /// Sends raw text (for malformed-input tests).
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        Ok(self.ws.send(Message::Text(text.into())).await?)
    }

    /// The next JSON message or the close, within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> anyhow::Result<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await.map_err(|_| anyhow!("nothing received in {timeout:?}"))?;
            match next {
                Some(Ok(Message::Text(t))) => return Ok(Received::Json(serde_json::from_str(&t)?)),
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Ok(Received::Closed);
                }
                None | Some(Err(_)) => return Ok(Received::Closed),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next JSON message (an error if the socket closes first).
    pub async fn recv_json(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        match self.recv(timeout).await? {
            Received::Json(v) => Ok(v),
            Received::Closed => Err(anyhow!("the socket closed")),
        }
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Closes the socket and waits up to `timeout` for the other side's close frame: the whole
    /// closing handshake, as a browser does it.
    pub async fn close_and_wait(mut self, timeout: Duration) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(timeout, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// Waits until `ws_url` answers as a stream path: convenience for tools.
pub async fn request_offer(signal: &mut Signal) -> anyhow::Result<Value> {
    signal.send_message(&PlayerMessage::RequestOffer).await?;
    signal.recv_json(Duration::from_secs(10)).await
}
