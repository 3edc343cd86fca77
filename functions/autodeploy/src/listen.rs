//! `--listen`: the forms it accepts, and binding them before anything else is done.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// The forms `--listen` accepts, shown whenever one is refused.
pub const FORMS: &str = "use HOST:PORT or :PORT, e.g. 127.0.0.1:8080 (this machine only), \
     :8080 or 0.0.0.0:8080 (every interface), localhost:8080, [::1]:8080";

/// Connections the kernel queues for the accept loop; it caps this at `net.core.somaxconn`.
const BACKLOG: i32 = 1024;

/// Where to listen, as given: an address, a host name to resolve, or every interface.
#[derive(Clone, Debug)]
pub struct Listen {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug)]
enum Host {
    Ip(IpAddr),
    Name(String),
    Every,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
            Host::Every => write!(f, ":{}", self.port),
        }
    }
}

/// Read `--listen` (clap's value parser): only its form is checked here; names are resolved
/// when binding.
pub fn parse(text: &str) -> Result<Listen, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Listen {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        });
    }
    let refused = |why: &str| Err(format!("{why}; {FORMS}"));
    if text.parse::<u16>().is_ok() {
        return refused(&format!("a port alone is written :{text}"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return refused("no port");
    };
    let Ok(port) = port.parse::<u16>() else {
        return refused("the port must be a number from 0 to 65535");
    };
    let host = if host.is_empty() {
        Host::Every
    } else if host.contains(':') || host.starts_with('[') {
        return refused("an IPv6 address goes in brackets, as in [::1]:8080");
    } else if host.split('.').all(is_label) {
        Host::Name(host.to_owned())
    } else {
        return refused("not an IP address nor a host name");
    };
    Ok(Listen { host, port })
}

/// A DNS label: letters, digits and inner hyphens.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl Listen {
    /// Bind every address this stands for. `:PORT` is one socket for IPv6 and IPv4 together
    /// (IPv4 alone where the machine has no IPv6); a host name, each address it resolves to
    /// that this machine has (`localhost`: 127.0.0.1 and ::1).
    pub fn bind(&self) -> Result<Vec<TcpListener>, String> {
        let port = self.port;
        match &self.host {
            Host::Ip(ip) => Ok(vec![
                bind_one(SocketAddr::new(*ip, port), false).map_err(|e| refusal(self, &e))?,
            ]),
            Host::Every => {
                let every_v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
                match bind_one(every_v6, true) {
                    Ok(listener) => Ok(vec![listener]),
                    Err(e) if no_such_address(&e) => {
                        let every_v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                        Ok(vec![bind_one(every_v4, false).map_err(|e| refusal(self, &e))?])
                    }
                    Err(e) => Err(refusal(self, &e)),
                }
            }
            Host::Name(name) => {
                let mut addrs: Vec<SocketAddr> = (name.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve the host name of --listen {self}: {e}; {FORMS}"))?
                    .collect();
                addrs.sort();
                addrs.dedup();
                let mut listeners = Vec::new();
                let mut missing = None;
                for addr in addrs {
                    match bind_one(addr, false) {
                        Ok(listener) => listeners.push(listener),
                        // An address the name resolves to that this machine does not have
                        // (often ::1 without IPv6): the others still serve.
                        Err(e) if no_such_address(&e) => missing = Some(e),
                        Err(e) => return Err(refusal(self, &e)),
                    }
                }
                match (listeners.is_empty(), missing) {
                    (false, _) => Ok(listeners),
                    (true, Some(e)) => Err(refusal(self, &e)),
                    (true, None) => Err(format!(
                        "the host name of --listen {self} resolves to no address; {FORMS}"
                    )),
                }
            }
        }
    }
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // A restart can listen again at once, beside connections of the previous process that
    // are still closing.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The machine has no such address, or no such address family.
fn no_such_address(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// Why `listen` cannot be bound, and what to do about it.
fn refusal(listen: &Listen, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        ErrorKind::AddrInUse => "another process listens on that port: stop it, or choose another port".to_owned(),
        ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges: listen on a higher port (a reverse proxy can serve 443)".to_owned()
        }
        _ if no_such_address(e) => format!("this machine has no such address; {FORMS}"),
        _ => FORMS.to_owned(),
    };
    format!("cannot listen on {listen}: {e}; {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        for (text, shown) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:80", "0.0.0.0:80"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::]:0", "[::]:0"),
            (":8080", ":8080"),
            ("localhost:8080", "localhost:8080"),
            (
                "autodeploy.internal.example.com:443",
                "autodeploy.internal.example.com:443",
            ),
        ] {
            assert_eq!(parse(text).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn refused_forms_say_what_works() {
        for (text, why) in [
            ("not-an-address", "no port"),
            ("8080", "a port alone is written :8080"),
            ("localhost:http", "the port must be a number"),
            (":65536", "the port must be a number"),
            ("::1:8080", "in brackets"),
            ("[::1:8080", "in brackets"),
            ("exa mple.com:80", "not an IP address nor a host name"),
            ("-bad-.com:80", "not an IP address nor a host name"),
            ("a..b:80", "not an IP address nor a host name"),
        ] {
            let message = parse(text).unwrap_err();
            assert!(message.contains(why), "{text}: {message}");
            assert!(message.ends_with(FORMS), "{text}: {message}");
        }
    }
}
