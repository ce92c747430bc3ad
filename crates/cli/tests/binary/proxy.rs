//! A TCP proxy the test owns, for network partitions: it forwards `127.0.0.1:<port>` to
//! a target and can be cut (for every connection, or only for one process's) and healed.
//!
//! It can also rewrite the target's address to its own in the bytes the target sends:
//! the simulator names its own address in `/gateway/bot` and in READY's
//! `resume_gateway_url`, so with the rewrite every connection a node opens (IDENTIFY and
//! RESUME alike) goes through the proxy. The rewrite keeps every length (both ports have
//! five digits), so HTTP bodies and WebSocket frames stay valid; it needs uncompressed
//! frames (`discord.compression = "none"`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How a cut treats the connections it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Open connections are dropped at once; new ones are accepted and then hang
    /// (nothing is forwarded) until the heal.
    Drop,
    /// Nothing is forwarded on open or new connections until the heal, then everything
    /// held flows again: packets lost for a while, as TCP sees a partition.
    Hang,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Policy {
    Open,
    /// `pid: None` cuts every connection; `Some` only those of that process.
    Cut {
        mode: Cut,
        pid: Option<u32>,
    },
}

/// What the policy means for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Forward,
    Hold,
    Drop,
}

struct Shared {
    target: SocketAddr,
    addr: SocketAddr,
    rewrite: Option<Rewrite>,
    policy: watch::Sender<Policy>,
}

/// A proxy on `127.0.0.1`; every task it runs ends when it is dropped.
pub(crate) struct Proxy {
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Forwards to `target` as it is.
    pub(crate) fn start(runtime: &tokio::runtime::Runtime, target: SocketAddr) -> Self {
        Self::launch(runtime, target, false)
    }

    /// Forwards to `target`, writing its own address for the target's in what the
    /// target sends.
    pub(crate) fn rewriting(runtime: &tokio::runtime::Runtime, target: SocketAddr) -> Self {
        Self::launch(runtime, target, true)
    }

    fn launch(runtime: &tokio::runtime::Runtime, target: SocketAddr, rewrite: bool) -> Self {
        let want = target.to_string().len();
        let listener = (0..50)
            .find_map(|_| {
                let listener = runtime
                    .block_on(TcpListener::bind("127.0.0.1:0"))
                    .expect("the proxy binds");
                let addr = listener.local_addr().expect("local addr");
                // The rewrite must keep every length.
                (!rewrite || addr.to_string().len() == want).then_some(listener)
            })
            .expect("a free port as long as the target's");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            target,
            addr,
            rewrite: rewrite.then(|| Rewrite::new(&target.to_string(), &addr.to_string())),
            policy: watch::Sender::new(Policy::Open),
        });
        let accept = runtime.spawn(accept_loop(listener, Arc::clone(&shared)));
        Self { shared, accept }
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Cuts every connection.
    pub(crate) fn cut(&self, mode: Cut) {
        self.shared
            .policy
            .send_replace(Policy::Cut { mode, pid: None });
    }

    /// Cuts the connections process `pid` opened (and opens while cut); the others
    /// keep flowing.
    pub(crate) fn cut_process(&self, pid: u32, mode: Cut) {
        self.shared.policy.send_replace(Policy::Cut {
            mode,
            pid: Some(pid),
        });
    }

    /// Forwards everything again.
    pub(crate) fn heal(&self) {
        self.shared.policy.send_replace(Policy::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns every connection task: aborting it ends them all.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, peer)) = accepted {
                    let _ = client.set_nodelay(true);
                    connections.spawn(serve(client, peer, Arc::clone(&shared)));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection: held while cut, then forwarded both ways.
async fn serve(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // The client's socket, to tell which process opened the connection.
    let inode = socket_inode(peer.port(), shared.addr.port());
    let mut policy = shared.policy.subscribe();
    loop {
        match verdict(&policy.borrow_and_update(), inode) {
            Verdict::Forward => break,
            Verdict::Hold | Verdict::Drop => {}
        }
        if policy.changed().await.is_err() {
            return;
        }
    }
    let Ok(upstream) = TcpStream::connect(shared.target).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::join!(
        pump(
            client_read,
            upstream_write,
            None,
            shared.policy.subscribe(),
            inode
        ),
        pump(
            upstream_read,
            client_write,
            shared.rewrite.clone(),
            shared.policy.subscribe(),
            inode,
        ),
    );
}

/// Copies one direction until end of stream or a `Cut::Drop` that hits the connection
/// (both directions return then, and every half is dropped: the sockets close).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    rewrite: Option<Rewrite>,
    mut policy: watch::Receiver<Policy>,
    inode: Option<u64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut held = Vec::new();
    let mut now = verdict(&policy.borrow_and_update(), inode);
    loop {
        match now {
            Verdict::Drop => return,
            Verdict::Hold => {
                if policy.changed().await.is_err() {
                    return;
                }
                now = verdict(&policy.borrow_and_update(), inode);
                continue;
            }
            Verdict::Forward => {}
        }
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        let _ = to.write_all(&held).await;
                        let _ = to.shutdown().await;
                        return;
                    }
                    Ok(n) => n,
                };
                let out = match &rewrite {
                    Some(rewrite) => rewrite.apply(&mut held, &buf[..n]),
                    None => buf[..n].to_vec(),
                };
                if to.write_all(&out).await.is_err() {
                    return;
                }
            }
            // A held tail that turned out not to be the address.
            () = tokio::time::sleep(Duration::from_millis(20)), if !held.is_empty() => {
                if to.write_all(&std::mem::take(&mut held)).await.is_err() {
                    return;
                }
            }
            changed = policy.changed() => {
                if changed.is_err() {
                    return;
                }
                now = verdict(&policy.borrow_and_update(), inode);
            }
        }
    }
}

fn verdict(policy: &Policy, inode: Option<u64>) -> Verdict {
    let Policy::Cut { mode, pid } = policy else {
        return Verdict::Forward;
    };
    let hit = match pid {
        None => true,
        Some(pid) => inode.is_some_and(|inode| socket_inodes(*pid).contains(&inode)),
    };
    match (hit, mode) {
        (false, _) => Verdict::Forward,
        (true, Cut::Drop) => Verdict::Drop,
        (true, Cut::Hang) => Verdict::Hold,
    }
}

/// The inode of the local TCP socket from `local_port` to `remote_port` on 127.0.0.1,
/// from `/proc/net/tcp` (the client's end of an accepted connection).
fn socket_inode(local_port: u16, remote_port: u16) -> Option<u64> {
    let local = format!(":{local_port:04X}");
    let remote = format!(":{remote_port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(l), Some(r), Some(inode)) = (fields.get(1), fields.get(2), fields.get(9))
            else {
                return None;
            };
            (l.ends_with(&local) && r.ends_with(&remote))
                .then(|| inode.parse().ok())
                .flatten()
                .filter(|&inode| inode != 0)
        })
    })
}

/// The inodes of every socket process `pid` holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let link = std::fs::read_link(entry.path()).ok()?;
            let link = link.to_string_lossy();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Replaces one byte string with another of the same length in a stream.
#[derive(Debug, Clone)]
struct Rewrite {
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Rewrite {
    fn new(from: &str, to: &str) -> Self {
        assert_eq!(from.len(), to.len(), "a rewrite keeps every length");
        Self {
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        }
    }

    /// `held` + `chunk` with every occurrence replaced; a tail that may be the start of
    /// one is kept back in `held`.
    fn apply(&self, held: &mut Vec<u8>, chunk: &[u8]) -> Vec<u8> {
        let mut data = std::mem::take(held);
        data.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            if rest.starts_with(&self.from) {
                out.extend_from_slice(&self.to);
                i += self.from.len();
            } else if self.from.starts_with(rest) {
                held.extend_from_slice(rest);
                break;
            } else {
                out.push(data[i]);
                i += 1;
            }
        }
        out
    }
}

#[test]
fn the_rewrite_finds_the_address_across_chunks() {
    let rewrite = Rewrite::new("127.0.0.1:41234", "127.0.0.1:50999");
    let mut held = Vec::new();
    let mut out = rewrite.apply(&mut held, b"{\"url\":\"ws://127.0.");
    assert_eq!(held, b"127.0.");
    out.extend(rewrite.apply(&mut held, b"0.1:41234/resume\"} 127.0.0.1:4"));
    assert_eq!(held, b"127.0.0.1:4");
    out.extend(rewrite.apply(&mut held, b"9"));
    assert!(held.is_empty());
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "{\"url\":\"ws://127.0.0.1:50999/resume\"} 127.0.0.1:49"
    );
}
