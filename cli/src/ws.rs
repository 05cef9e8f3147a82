//! WebSockets to the host (`/ws/...`): the URL from the host's, the token in the upgrade, and
//! refusals of the upgrade (401, 403, 404) said like REST errors.

use crate::failure::{CliResult, Failure};
use crate::session::Session;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `ws://` for `http://`; `wss://` is refused by this build (no TLS for sockets yet).
pub fn url(host: &str, path: &str) -> CliResult<String> {
    if let Some(rest) = host.strip_prefix("http://") {
        Ok(format!("ws://{rest}{path}"))
    } else if host.starts_with("https://") {
        Err(Failure::Usage(format!(
            "{host}: terminals, forwards and watches need a plain http:// host URL in this version"
        )))
    } else {
        Err(Failure::Usage(format!("{host}: not an http:// URL")))
    }
}

pub async fn connect(s: &Session, path: &str) -> CliResult<Socket> {
    let url = url(s.host(), path)?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| Failure::Usage(format!("{url}: {e}")))?;
    if let Some(t) = &s.target.token {
        let v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| Failure::Usage("the token holds characters a header cannot".into()))?;
        req.headers_mut().insert("authorization", v);
    }
    let connecting = tokio_tungstenite::connect_async(req);
    let (socket, _) = tokio::time::timeout(std::time::Duration::from_secs(30), connecting)
        .await
        .map_err(|_| Failure::Unreachable {
            host: s.host().to_string(),
            reason: "no answer to the WebSocket upgrade in 30 s".into(),
        })?
        .map_err(|e| refused(s, path, e))?;
    Ok(socket)
}

fn refused(s: &Session, path: &str, e: WsError) -> Failure {
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .to_string();
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
                .unwrap_or(body);
            s.fail(ferry_client::Error::Http {
                method: ferry_client::Method::GET,
                path: path.to_string(),
                status: ferry_client::StatusCode::from_u16(status)
                    .unwrap_or(ferry_client::StatusCode::BAD_GATEWAY),
                detail,
            })
        }
        WsError::Io(e) => Failure::Unreachable {
            host: s.host().to_string(),
            reason: e.to_string(),
        },
        other => Failure::Failed(format!("{path}: {other}")),
    }
}
