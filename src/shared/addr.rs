//! Where a shared queue's owner listens, and how a client finds it.
//!
//! The socket is `ringq.sock` inside the queue directory (mode 0600; the
//! directory is 0700 too) when that path fits a socket address (107 bytes
//! on Linux). A deeper directory gets a Linux abstract socket named after
//! the queue's identity instead. Either way the owner writes the address to
//! the file `SOCKET` in the directory (`unix ringq.sock` or
//! `abstract ringq/<instance id>/<dev>.<inode>`), and clients read it from there. Peers
//! are checked by uid (`SO_PEERCRED`), which also covers abstract sockets
//! (they have no file permissions).

use crate::error::{Error, Result};
use crate::storage;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The socket's file name inside the queue directory.
pub const SOCKET_NAME: &str = "ringq.sock";
/// The file that tells clients where the socket is.
pub const ADDRESS_FILE: &str = "SOCKET";
/// The longest socket path Linux accepts (`sun_path` less its NUL).
const MAX_PATH: usize = 107;

/// A shared queue's socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A socket file (inside the queue directory).
    Path(PathBuf),
    /// A Linux abstract socket name (no file).
    Abstract(String),
}

impl Address {
    /// The address to use for the queue in `dir` with identity `instance`.
    /// An abstract name also names the directory ([`dir_id`]): a copy of a
    /// queue (a backup restored beside it) has the same identity, and two
    /// copies served at once must not share a name.
    pub fn for_dir(dir: &Path, instance: u64) -> Address {
        let path = dir.join(SOCKET_NAME);
        if path.as_os_str().len() <= MAX_PATH {
            Address::Path(path)
        } else {
            let (dev, ino) = dir_id(dir);
            Address::Abstract(format!("ringq/{}/{dev:x}.{ino:x}", crate::error::fmt_id(instance)))
        }
    }

    fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Address::Path(p) => SocketAddr::from_pathname(p),
            Address::Abstract(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        }
    }

    /// The line written to `SOCKET`.
    fn describe(&self, dir: &Path) -> String {
        match self {
            Address::Path(p) => {
                let shown = p.strip_prefix(dir).unwrap_or(p);
                format!("unix {}\n", shown.display())
            }
            Address::Abstract(name) => format!("abstract {name}\n"),
        }
    }

    fn parse(dir: &Path, text: &str) -> Option<Address> {
        let (kind, rest) = text.trim_end_matches('\n').split_once(' ')?;
        match kind {
            // Only the socket of this directory: the file cannot point elsewhere.
            "unix" if rest == SOCKET_NAME => Some(Address::Path(dir.join(rest))),
            "abstract" if !rest.is_empty() => Some(Address::Abstract(rest.to_owned())),
            _ => None,
        }
    }

    /// Removes the socket file (an abstract socket goes with its listener).
    pub(crate) fn remove(&self) {
        if let Address::Path(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn connect(&self) -> std::io::Result<UnixStream> {
        UnixStream::connect_addr(&self.socket_addr()?)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Path(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{n}"),
        }
    }
}

/// Binds the owner's socket for the queue in `dir` (which the caller owns:
/// a socket file left by a dead owner is replaced) and records its address.
pub(crate) fn bind(dir: &Path, instance: u64) -> Result<(UnixListener, Address)> {
    let address = Address::for_dir(dir, instance);
    address.remove();
    let sa = address.socket_addr().map_err(|e| Error::storage("naming the shared queue's socket", dir, e))?;
    let listener =
        UnixListener::bind_addr(&sa).map_err(|e| Error::storage(format!("binding the socket {address}"), dir, e))?;
    if let Address::Path(p) = &address {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::storage("restricting the socket to its owner", p, e))?;
    }
    storage::write_atomic(None, dir, ADDRESS_FILE, address.describe(dir).as_bytes())
        .map_err(|e| Error::storage("writing the socket address", dir.join(ADDRESS_FILE), e))?;
    Ok((listener, address))
}

/// Forgets the address recorded in `dir` (a dead owner's, or at stop).
/// Only the holder of the directory's lock may call it.
pub(crate) fn clear(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(ADDRESS_FILE));
    let _ = std::fs::remove_file(dir.join(SOCKET_NAME));
}

/// The directory's device and inode numbers ((0, 0) if it cannot be read):
/// what tells a queue directory from a copy of it. The owner says them in
/// its welcome and a client checks them against its own directory's.
pub fn dir_id(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map_or((0, 0), |m| (m.dev(), m.ino()))
}

/// The address recorded in `dir`, if any.
pub fn read(dir: &Path) -> Option<Address> {
    let text = std::fs::read_to_string(dir.join(ADDRESS_FILE)).ok()?;
    Address::parse(dir, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deep_directory_gets_an_abstract_socket() {
        let short = Path::new("/tmp/q");
        assert_eq!(Address::for_dir(short, 1), Address::Path(short.join(SOCKET_NAME)));
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("d".repeat(110)), root.path().join("e".repeat(110)));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let (dev, ino) = dir_id(&a);
        assert_ne!((dev, ino), (0, 0));
        assert_eq!(Address::for_dir(&a, 0xab), Address::Abstract(format!("ringq/00000000000000ab/{dev:x}.{ino:x}")));
        // A copy of the queue (same identity) in another directory: another name.
        assert_ne!(Address::for_dir(&a, 0xab), Address::for_dir(&b, 0xab));
    }

    #[test]
    fn the_address_file_round_trips() {
        let dir = Path::new("/tmp/q");
        for a in [Address::Path(dir.join(SOCKET_NAME)), Address::Abstract("ringq/0000000000000001".into())] {
            assert_eq!(Address::parse(dir, &a.describe(dir)), Some(a));
        }
        assert_eq!(Address::parse(dir, "tcp 1.2.3.4"), None);
        assert_eq!(Address::parse(dir, "unix ../../elsewhere.sock"), None);
        assert_eq!(Address::parse(dir, ""), None);
    }
}
