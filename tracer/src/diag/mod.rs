//! NETLINK_SOCK_DIAG and `/proc`: what the kernel says about every TCP
//! socket right now, and which processes hold them. I/O only; what it
//! reads is plain data in [`crate::snapshot`].
//!
//! The agent takes a dump at start (to adopt sockets that predate it) and on
//! every reconcile interval (to confirm and end TIME_WAIT, and to heal lost
//! events). `tracer leaks` takes one when no agent runs. A sock_diag socket
//! sees only the network namespace it was created in: [`netns`] creates
//! one inside any namespace.
//!
//! - [`dump`]: the netlink request/receive loop ([`Dumper`], [`dump_tcp`]);
//! - `parse`: zero-copy decoding of the replies into
//!   [`SocketSnapshot`](crate::snapshot::SocketSnapshot)s, as received or
//!   from the [`Datagram`]s a capturing dumper kept ([`parse_datagrams`]);
//! - `error`: [`DiagError`], why a dump failed;
//! - [`netns`]: entering a network namespace to open a socket there;
//! - [`netstat`]: kernel TCP settings of a namespace from `/proc/sys`;
//! - [`portrange`]: its ephemeral port range and `tcp_tw_reuse`;
//! - [`owner`]: which processes hold a socket inode, like `ss -p`;
//! - [`cgroup`]: container ids from cgroup paths (pure).
//!
//! Inside the folder the imports run one way: `dump` -> `parse` -> `error`.
pub mod cgroup;
pub mod dump;
mod error;
pub mod netns;
pub mod netstat;
pub mod owner;
mod parse;
pub mod portrange;

pub use cgroup::container_id;
pub use dump::{DumpOptions, DumpStats, Dumper, dump_tcp};
pub use error::DiagError;
pub use netns::{NetnsHandle, own_netns};
pub use owner::{holds_socket, naming_warning, no_process, own_sockets, owners_of, who_listens};
pub use parse::{Datagram, Walk, on_dump_clock, parse_datagrams};

/// The old name of [`SocketSnapshot`](crate::snapshot::SocketSnapshot),
/// kept while agent/ still imports it from here.
pub use crate::snapshot::SocketSnapshot as DiagSocket;
