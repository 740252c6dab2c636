//! Copying bytes both ways between two connected streams, for the test
//! harness's balancer (TCP to TCP) and socket bridge (TCP to Unix).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs as _};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A TCP balancer in front of `nodes` (`host:port`), as a load balancer or
/// a Kubernetes Service would be: each connection goes to the next node
/// that accepts it, in turn, starting with the first. Answers its
/// `http://` address; it runs until the test process ends.
pub fn balancer(nodes: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the balancer");
    let address = listener.local_addr().expect("address");
    let next = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let nodes = nodes.clone();
            let first = next.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                for i in 0..nodes.len() {
                    let node = &nodes[(first + i) % nodes.len()];
                    let Some(addr) = node.to_socket_addrs().ok().and_then(|mut a| a.next()) else { continue };
                    if let Ok(upstream) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                        relay(client, upstream);
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

/// A stream that can be split into a reading and a writing half.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    /// A second handle to the same stream.
    fn duplicate(&self) -> std::io::Result<Self>;
    /// Shuts one direction, or both.
    fn close(&self, how: Shutdown);
}

impl Duplex for TcpStream {
    fn duplicate(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

impl Duplex for UnixStream {
    fn duplicate(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

/// Copies `client` to `upstream` and back until both sides are done; a
/// side that ends its writing has that end passed on.
pub fn relay(client: impl Duplex, upstream: impl Duplex) {
    let (Ok(mut client_in), Ok(mut upstream_in)) = (client.duplicate(), upstream.duplicate()) else { return };
    let (mut client_out, mut upstream_out) = (client, upstream);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut upstream_out);
        upstream_out.close(Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream_in, &mut client_out);
    client_out.close(Shutdown::Both);
    let _ = up.join();
}
