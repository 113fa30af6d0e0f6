//! Connecting from a chosen local address (`source`): each 127.0.0.x is a
//! distinct client address to the gateway, and has its own ephemeral ports
//! (a single source runs out of them under connect storms).
//!
//! monoio 0.2.4 cannot bind before connecting, so: a non-blocking socket,
//! `IP_BIND_ADDRESS_NO_PORT` (the port is picked at connect, per
//! destination, not at bind), bind, connect (`EINPROGRESS`), handed to
//! monoio and awaited for writability; then `SO_ERROR` says how it went.
//! monoio's io_uring driver works on blocking sockets (the legacy one on
//! non-blocking ones), so the socket is made blocking again under io_uring.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use monoio::net::TcpStream;
use tether::server::driver::Driver;

/// Local addresses a group of clients connects from, used in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(Vec<IpAddr>);

/// Most addresses one `source` may name (a typo like `127.0.0.2-127.1.0.0`
/// should not allocate millions).
const MAX_SOURCES: usize = 1024;

impl Sources {
    /// `""` (the kernel chooses), `"127.0.0.2"`, `"127.0.0.2-127.0.0.9"`
    /// (IPv4, inclusive) or a comma-separated list of either.
    pub fn parse(s: &str) -> Result<Sources, String> {
        let mut all = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (parse_v4(a, s)?, parse_v4(b, s)?);
                    let (a, b) = (u32::from(a), u32::from(b));
                    if b < a {
                        return Err(format!("source `{s}`: range {part} runs backwards"));
                    }
                    if (b - a) as usize >= MAX_SOURCES {
                        return Err(format!(
                            "source `{s}`: range {part} has more than {MAX_SOURCES} addresses"
                        ));
                    }
                    all.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
                }
                None => all.push(
                    part.parse()
                        .map_err(|_| format!("source `{s}`: `{part}` is not an IP address"))?,
                ),
            }
        }
        if all.len() > MAX_SOURCES {
            return Err(format!("source `{s}`: more than {MAX_SOURCES} addresses"));
        }
        Ok(Sources(all))
    }

    /// The address for the `n`-th client or connection; `None`: any.
    pub fn pick(&self, n: usize) -> Option<IpAddr> {
        (!self.0.is_empty()).then(|| self.0[n % self.0.len()])
    }

    pub fn addresses(&self) -> &[IpAddr] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_v4(a: &str, whole: &str) -> Result<Ipv4Addr, String> {
    a.trim()
        .parse()
        .map_err(|_| format!("source `{whole}`: `{a}` is not an IPv4 address (ranges are IPv4)"))
}

/// Opens a TCP connection to `to`, from `from` if given.
pub async fn connect(
    to: SocketAddr,
    from: Option<IpAddr>,
    driver: Driver,
) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_addr(to).await;
    };
    if from.is_ipv4() != to.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("source {from} and destination {to} are of different IP versions"),
        ));
    }
    let socket = start_connect(to, from)?;
    let stream = TcpStream::from_std(socket)?;
    stream.writable(false).await?;
    let fd = stream.as_raw_fd();
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on a socket we own, into a c_int of the size given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    if driver == Driver::IoUring {
        set_nonblocking(fd, false)?;
    }
    Ok(stream)
}

/// A non-blocking socket bound to `from`, its connect to `to` under way.
fn start_connect(to: SocketAddr, from: IpAddr) -> io::Result<std::net::TcpStream> {
    let domain = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned by `socket` at once.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; dropping closes it.
    let socket = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    if from.is_ipv4() {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value. Failing is harmless
        // (the port is then chosen at bind, from fewer candidates).
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let (local, local_len) = sockaddr(SocketAddr::new(from, 0));
    // SAFETY: `local` is a sockaddr_storage holding `local_len` valid bytes.
    if unsafe {
        libc::bind(
            fd,
            (&local as *const libc::sockaddr_storage).cast(),
            local_len,
        )
    } < 0
    {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("bind to {from}: {e}")));
    }
    let (remote, remote_len) = sockaddr(to);
    // SAFETY: as above.
    let r = unsafe {
        libc::connect(
            fd,
            (&remote as *const libc::sockaddr_storage).cast(),
            remote_len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(socket)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert!(Sources::parse("").unwrap().is_empty());
        let one = Sources::parse("127.0.0.2").unwrap();
        assert_eq!(one.pick(7), Some("127.0.0.2".parse().unwrap()));
        let range = Sources::parse("127.0.0.3-127.0.0.5, ::1").unwrap();
        let got: Vec<String> = range.addresses().iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["127.0.0.3", "127.0.0.4", "127.0.0.5", "::1"]);
        assert_eq!(range.pick(5), Some("127.0.0.4".parse().unwrap()));
        assert!(Sources::parse("127.0.0.5-127.0.0.3").is_err());
        assert!(Sources::parse("127.0.0.1-127.1.0.0").is_err());
        assert!(Sources::parse("localhost").is_err());
        assert_eq!(Sources::default().pick(3), None);
    }

    fn connect_from(driver: Driver) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let from: IpAddr = "127.0.0.3".parse().unwrap();
        let seen = std::thread::spawn(move || listener.accept().unwrap().1);
        let local = tether::server::driver::block_on(driver, 64, async move {
            use monoio::io::AsyncWriteRentExt;
            let mut s = connect(to, Some(from), driver).await.unwrap();
            let (r, _) = s.write_all(b"hi".to_vec()).await;
            r.unwrap();
            s.local_addr().unwrap()
        })
        .unwrap();
        assert_eq!(local.ip(), from);
        assert_eq!(seen.join().unwrap().ip(), from);
    }

    #[test]
    fn connects_from_the_given_address() {
        if let Ok(d) = tether::server::driver::choose(tether::config::IoDriver::Auto) {
            connect_from(d);
        }
        connect_from(Driver::Epoll);
    }

    #[test]
    fn a_refused_connect_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = tether::server::driver::block_on(Driver::Epoll, 64, async move {
            connect(to, Some("127.0.0.2".parse().unwrap()), Driver::Epoll)
                .await
                .map(|_| ())
        })
        .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    }
}
