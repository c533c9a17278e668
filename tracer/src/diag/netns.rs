//! Opening sockets inside another network namespace.
//!
//! A netlink socket belongs for good to the network namespace of the thread
//! that created it. To list the sockets of another namespace, a helper
//! thread enters it (`setns(2)` with `CLONE_NEWNET`, which needs
//! `CAP_SYS_ADMIN`), creates the socket, returns to its own namespace and
//! ends; the rest of the process never leaves its namespace.
//!
//! A [`NetnsHandle`] keeps the namespace's file open, so a dumper can make a
//! new socket there after an error. It pins the namespace, as the netlink
//! socket itself does: drop both when the namespace has vanished from
//! every process and mount.
use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    sync::Arc,
};

/// An open network namespace (`/proc/<pid>/ns/net`, `/run/netns/<name>`).
#[derive(Clone, Debug)]
pub struct NetnsHandle {
    file: Arc<File>,
    inode: u32,
}

impl NetnsHandle {
    /// Open the namespace file at `path` (a process's `ns/net` link or a
    /// bind mount of one).
    pub fn open(path: &Path) -> io::Result<NetnsHandle> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino() as u32;
        Ok(NetnsHandle {
            file: Arc::new(file),
            inode,
        })
    }

    /// The namespace's inode, as events report it in `netns`.
    pub fn inode(&self) -> u32 {
        self.inode
    }

    /// Run `f` on a helper thread inside this namespace and return what it
    /// made. Errors: entering it was refused (`EPERM` without
    /// `CAP_SYS_ADMIN`), or the thread could not be started.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let target = self.file.as_raw_fd();
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("tracer-setns".into())
                .spawn_scoped(s, move || {
                    // The thread's own namespace, to return to: if it could
                    // not, it ends anyway, and the namespace with it.
                    let home = File::open("/proc/thread-self/ns/net")?;
                    enter(target)?;
                    let made = f();
                    let _ = enter(home.as_raw_fd());
                    Ok(made)
                })?
                .join()
                .map_err(|_| io::Error::other("the setns helper thread panicked"))?
        })
    }
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread.
fn enter(fd: i32) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor number; it changes the
    // calling thread's network namespace and nothing else.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The inode of this process's own network namespace (0 if unreadable).
pub fn own_netns() -> u32 {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entering our own namespace needs no privilege beyond what setns
    /// wants; run as root by the privileged tests, skipped otherwise.
    #[test]
    fn a_helper_thread_comes_back_home() {
        let own = NetnsHandle::open(Path::new("/proc/self/ns/net")).expect("open own netns");
        assert_eq!(own.inode(), own_netns());
        match own.run_inside(own_netns) {
            Ok(inode) => assert_eq!(inode, own.inode()),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
        assert_eq!(own_netns(), own.inode(), "this thread never moved");
    }
}
