//! A TCP proxy inside the test that cuts connections at random.
//!
//! The proxy listens on 127.0.0.1 (a free port) and forwards every connection to a target
//! (a database server). Its chaos task cuts live connections at random: some at once,
//! whatever they are doing, and some the next time bytes cross them, so a request is cut
//! half-forwarded or its answer (the `COMMIT`'s acknowledgement, say) is lost after the
//! server acted on it. A cut connection is reset (`SO_LINGER` 0) on both sides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy has decided for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Keep forwarding.
    No,
    /// Reset both sides now.
    Now,
    /// Reset both sides the next time bytes arrive from either: half of a request is
    /// forwarded, or an answer is dropped.
    InFlight,
}

/// A small deterministic random generator (xorshift64*), seeded per proxy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A generator seeded at random.
    pub fn random() -> Self {
        Self::new(uuid::Uuid::new_v4().as_u64_pair().0)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `low..high` (`low` if the range is empty).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// `true` with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.next_u64() % denominator.max(1) < numerator
    }
}

/// What the proxy's tasks share.
struct Shared {
    /// Where connections are forwarded.
    target: SocketAddr,
    /// The live connections, each with the channel that tells it to cut.
    live: Mutex<HashMap<u64, watch::Sender<Cut>>>,
    /// The next connection's id.
    next_id: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicUsize,
    /// Connections cut at once.
    cut_now: AtomicUsize,
    /// Connections cut with bytes in flight.
    cut_in_flight: AtomicUsize,
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<Cut>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A TCP proxy to one target; dropped, it stops and resets every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
    chaos: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Listen on a free port of 127.0.0.1 and forward every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target,
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            cut_now: AtomicUsize::new(0),
            cut_in_flight: AtomicUsize::new(0),
        });
        let acceptor = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            acceptor,
            chaos: Mutex::new(None),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Start cutting connections at random: about every `every` (jittered between half and
    /// one and a half of it), each live connection is cut with probability one half, half
    /// of those at once and half with bytes in flight; every tenth round cuts them all.
    pub fn start_chaos(&self, every: Duration, mut rng: Rng) {
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let every_ms = every.as_millis().max(2) as u64;
            let mut round = 0u64;
            loop {
                let pause = rng.between(every_ms / 2, every_ms + every_ms / 2);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                round += 1;
                let all = round.is_multiple_of(10);
                for cut in shared.live().values() {
                    if all {
                        cut.send_replace(Cut::Now);
                    } else if rng.chance(1, 2) {
                        let how = if rng.chance(1, 2) {
                            Cut::Now
                        } else {
                            Cut::InFlight
                        };
                        // A connection already told to cut keeps the first order.
                        cut.send_if_modified(|current| {
                            if *current == Cut::No {
                                *current = how;
                                true
                            } else {
                                false
                            }
                        });
                    }
                }
            }
        });
        let previous = self
            .chaos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Stop cutting connections (live ones keep working).
    pub fn stop_chaos(&self) {
        let task = self.chaos.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
        }
    }

    /// Cut every live connection now; returns how many there were.
    pub fn cut_all(&self) -> usize {
        let live = self.shared.live();
        for cut in live.values() {
            cut.send_replace(Cut::Now);
        }
        live.len()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections cut at once so far.
    pub fn cut_now(&self) -> usize {
        self.shared.cut_now.load(Ordering::SeqCst)
    }

    /// Connections cut with bytes in flight so far.
    pub fn cut_in_flight(&self) -> usize {
        self.shared.cut_in_flight.load(Ordering::SeqCst)
    }

    /// Connections cut so far, both ways.
    pub fn cut(&self) -> usize {
        self.cut_now() + self.cut_in_flight()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_chaos();
        self.acceptor.abort();
        self.cut_all();
    }
}

/// Accept connections and start forwarding each.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // A refused upstream connection is passed on as a reset of the client's.
            let Ok(server) = TcpStream::connect(shared.target).await else {
                let _ = client.set_zero_linger();
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
            let (cut_tx, cut_rx) = watch::channel(Cut::No);
            shared.live().insert(id, cut_tx);
            let cut = forward(client, server, cut_rx).await;
            shared.live().remove(&id);
            match cut {
                Some(Cut::Now) => shared.cut_now.fetch_add(1, Ordering::SeqCst),
                Some(Cut::InFlight) => shared.cut_in_flight.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        });
    }
}

/// Forward bytes both ways until either side closes (`None`) or the proxy cuts the
/// connection (`Some(how)`); a cut resets both sides.
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    mut cut: watch::Receiver<Cut>,
) -> Option<Cut> {
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let how = loop {
        tokio::select! {
            read = client.read(&mut up) => {
                let n = match read {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => n,
                };
                if *cut.borrow() == Cut::InFlight {
                    // Half a request reaches the server, then the connection dies.
                    let _ = server.write_all(&up[..n / 2]).await;
                    break Some(Cut::InFlight);
                }
                if server.write_all(&up[..n]).await.is_err() {
                    break None;
                }
            }
            read = server.read(&mut down) => {
                let n = match read {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => n,
                };
                if *cut.borrow() == Cut::InFlight {
                    // The server acted on the request; its answer is lost.
                    break Some(Cut::InFlight);
                }
                if client.write_all(&down[..n]).await.is_err() {
                    break None;
                }
            }
            changed = cut.changed() => {
                if changed.is_err() || *cut.borrow() == Cut::Now {
                    break Some(Cut::Now);
                }
            }
        }
    };
    if how.is_some() {
        // Reset rather than close: the peers see "connection reset", as after a network
        // failure, not an orderly end of stream.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    how
}
