//! A scripted SMTP server on 127.0.0.1 for the SMTP adapter's tests.
//!
//! The `mailin` crate parses commands and runs the RFC 5321 session: EHLO, STARTTLS, AUTH
//! PLAIN and LOGIN, MAIL, RCPT, DATA with dot-unstuffing. This module supplies the network
//! side on Tokio: plain, STARTTLS or implicit TLS through rustls, with a certificate made at
//! test time. Its handler records what arrives and replies at each stage from a queue of
//! scripted replies, or with 250 when the queue is empty.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

pub(crate) const USERNAME: &str = "herald";
pub(crate) const PASSWORD: &str = "relay-secret";

/// The AUTH mechanisms the server offers. With any, it requires AUTH before MAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    PlainAndLogin,
    LoginOnly,
}

/// How clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    Plain,
    Starttls,
    Implicit,
}

/// One message as the server received it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Received {
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    pub(crate) data: String,
}

impl Received {
    /// Returns the value of header `name` (case-insensitive), without folding support.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Credentials the server saw: the mechanism, user and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthAttempt {
    pub(crate) mechanism: &'static str,
    pub(crate) username: String,
    pub(crate) password: String,
}

/// Replies queued per stage; each reply is used once, in order.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub(crate) greeting: VecDeque<(u16, &'static str)>,
    pub(crate) mail: VecDeque<(u16, &'static str)>,
    pub(crate) rcpt: VecDeque<(u16, &'static str)>,
    pub(crate) data_end: VecDeque<(u16, &'static str)>,
    /// Stop replying once the end of the message arrives, as a hung server would.
    pub(crate) stall_after_data: bool,
}

#[derive(Default)]
struct State {
    script: Mutex<Script>,
    received: Mutex<Vec<Received>>,
    auths: Mutex<Vec<AuthAttempt>>,
    connections: AtomicUsize,
}

pub(crate) struct SmtpServer {
    addr: SocketAddr,
    state: Arc<State>,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    /// Starts a server on 127.0.0.1 with a fresh port. It offers AUTH only over TLS.
    pub(crate) async fn start(security: Security, auth: Auth) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0 for the SMTP test server");
        let addr = listener.local_addr().unwrap();
        let (ca_pem, acceptor) = test_tls();
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(
            listener,
            security,
            auth,
            acceptor,
            state.clone(),
        ));
        SmtpServer {
            addr,
            state,
            ca_pem,
            task,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Returns the PEM of the CA that signed the server's certificate.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Changes the script for later commands.
    pub(crate) fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.state.script.lock().unwrap());
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub(crate) fn auths(&self) -> Vec<AuthAttempt> {
        self.state.auths.lock().unwrap().clone()
    }

    /// Returns how many TCP connections the server has accepted.
    pub(crate) fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    security: Security,
    auth: Auth,
    acceptor: TlsAcceptor,
    state: Arc<State>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    while let Ok((stream, peer)) = listener.accept().await {
        state.connections.fetch_add(1, Ordering::SeqCst);
        let handler = ScriptedHandler {
            state: state.clone(),
            message: Received::default(),
        };
        let acceptor = acceptor.clone();
        sessions.spawn(async move {
            // A client that hangs up mid-session is part of several tests.
            let _ = serve(stream, peer.ip(), security, auth, acceptor, handler).await;
        });
    }
}

enum Ended {
    Closed,
    UpgradeTls,
}

async fn serve(
    stream: TcpStream,
    peer: IpAddr,
    security: Security,
    auth: Auth,
    acceptor: TlsAcceptor,
    handler: ScriptedHandler,
) -> io::Result<()> {
    let state = handler.state.clone();
    let mut builder = SessionBuilder::new("mock-relay.herald.test");
    if auth == Auth::PlainAndLogin {
        builder.enable_auth(AuthMechanism::Plain);
    }
    if auth != Auth::None {
        builder.enable_auth(AuthMechanism::Login);
    }
    if security == Security::Starttls {
        builder.enable_start_tls();
    }
    let mut session = builder.build(peer, handler);

    let greeting = state.script.lock().unwrap().greeting.pop_front();
    let greeting = match greeting {
        Some((code, text)) => Response::custom(code, text.to_owned()),
        None => session.greeting(),
    };

    match security {
        Security::Implicit => {
            let mut tls = BufReader::new(acceptor.accept(stream).await?);
            session.tls_active();
            converse(&mut session, &mut tls, Some(greeting), &state).await?;
        }
        Security::Plain | Security::Starttls => {
            let mut plain = BufReader::new(stream);
            let ended = converse(&mut session, &mut plain, Some(greeting), &state).await?;
            if let Ended::UpgradeTls = ended {
                let mut tls = BufReader::new(acceptor.accept(plain.into_inner()).await?);
                session.tls_active();
                converse(&mut session, &mut tls, None, &state).await?;
            }
        }
    }
    Ok(())
}

/// Reads commands and writes replies until the client or a reply closes the session, or the
/// client starts TLS.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut mailin::Session<ScriptedHandler>,
    stream: &mut BufReader<S>,
    greeting: Option<Response>,
    state: &State,
) -> io::Result<Ended> {
    if let Some(greeting) = greeting {
        let closes = greeting.action == Action::Close;
        write(stream, &greeting).await?;
        if closes {
            return Ok(Ended::Closed);
        }
    }

    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(Ended::Closed);
        }
        let stalls = line == b".\r\n" && state.script.lock().unwrap().stall_after_data;
        if stalls {
            std::future::pending::<()>().await;
        }
        let response = session.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Reply => write(stream, &response).await?,
            Action::Close => {
                write(stream, &response).await?;
                return Ok(Ended::Closed);
            }
            Action::UpgradeTls => {
                write(stream, &response).await?;
                return Ok(Ended::UpgradeTls);
            }
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, response: &Response) -> io::Result<()> {
    stream.write_all(&response.buffer()?).await?;
    stream.flush().await
}

struct ScriptedHandler {
    state: Arc<State>,
    message: Received,
}

impl ScriptedHandler {
    fn scripted(&self, stage: impl FnOnce(&mut Script) -> Option<(u16, &'static str)>) -> Response {
        match stage(&mut self.state.script.lock().unwrap()) {
            Some((code, text)) => Response::custom(code, text.to_owned()),
            None => mailin::response::OK,
        }
    }

    fn authenticate(&self, mechanism: &'static str, username: &str, password: &str) -> Response {
        self.state.auths.lock().unwrap().push(AuthAttempt {
            mechanism,
            username: username.to_owned(),
            password: password.to_owned(),
        });
        if username == USERNAME && password == PASSWORD {
            mailin::response::AUTH_OK
        } else {
            Response::custom(535, "5.7.8 Authentication credentials invalid".to_owned())
        }
    }
}

impl Handler for ScriptedHandler {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.message = Received {
            from: from.to_owned(),
            ..Received::default()
        };
        self.scripted(|script| script.mail.pop_front())
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let response = self.scripted(|script| script.rcpt.pop_front());
        if !response.is_error {
            self.message.to.push(to.to_owned());
        }
        response
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.message.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut response = self.scripted(|script| script.data_end.pop_front());
        if response.is_error {
            // NOTE: mailin 0.6 stays in its DATA state after a negative reply to the end of
            // the message, so it would read the client's next command as message text. The
            // server closes the connection after such a reply instead.
            response.action = Action::Close;
        } else {
            let message = std::mem::take(&mut self.message);
            self.state.received.lock().unwrap().push(message);
        }
        response
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        self.authenticate("PLAIN", authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.authenticate("LOGIN", username, password)
    }
}

/// Makes a CA and a server certificate for `localhost` and 127.0.0.1 signed by it. Returns
/// the CA's PEM and an acceptor that presents the server certificate.
fn test_tls() -> (String, TlsAcceptor) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Herald test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &ca).unwrap();

    let chain = vec![CertificateDer::from(certificate.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (ca.pem(), TlsAcceptor::from(Arc::new(config)))
}
