//! A TCP proxy on loopback that a test can cut or freeze, to make a server unreachable or
//! silent for Herald without touching the server other tests share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct CuttableProxy {
    pub address: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    /// Connections accepted before this number are frozen: kept open, forwarding nothing.
    frozen_below: Arc<AtomicU64>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CuttableProxy {
    /// Starts forwarding connections from a free loopback port to `upstream`.
    pub async fn start(upstream: &'static str) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let frozen_below = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            cut.clone(),
            frozen_below.clone(),
            connections.clone(),
        ));
        CuttableProxy {
            address,
            cut,
            frozen_below,
            connections,
            accept,
        }
    }

    /// Stops forwarding on every open connection while keeping it open, as a network that
    /// silently drops packets would. Connections made afterwards work.
    pub fn freeze(&self) {
        self.frozen_below.store(u64::MAX, Ordering::SeqCst);
    }

    /// Drops every open connection and refuses new ones until [`CuttableProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: &'static str,
    cut: Arc<AtomicBool>,
    frozen_below: Arc<AtomicU64>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut number = 0_u64;
    while let Ok((client, _)) = listener.accept().await {
        if cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        number += 1;
        // A freeze applies to the connections open at that moment only.
        if frozen_below.load(Ordering::SeqCst) == u64::MAX {
            frozen_below.store(number, Ordering::SeqCst);
        }
        let frozen = Frozen {
            number,
            frozen_below: frozen_below.clone(),
        };
        let forward = tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                pump(client_read, server_write, frozen.clone()),
                pump(server_read, client_write, frozen)
            );
        });
        connections.lock().unwrap().push(forward);
    }
}

#[derive(Clone)]
struct Frozen {
    number: u64,
    frozen_below: Arc<AtomicU64>,
}

impl Frozen {
    fn is_frozen(&self) -> bool {
        self.number < self.frozen_below.load(Ordering::SeqCst)
    }
}

/// Copies bytes one way until either side closes. Once frozen, it keeps both sockets open
/// and forwards nothing more.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Frozen,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.is_frozen() {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
