//! Copying bytes both ways between two connected streams, for the test
//! harness's balancer (TCP to TCP) and socket bridge (TCP to Unix).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;

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
