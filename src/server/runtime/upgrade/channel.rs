//! The upgrade channel: a Unix SOCK_SEQPACKET socket pair between the old
//! and the new process, carrying [`Note`]s with descriptors beside them
//! (SCM_RIGHTS). Blocking, on the processes' upgrade threads only.
//!
//! A note longer than one packet is cut into chunks; each packet starts
//! with a byte saying whether more follow. A note's descriptors ride on
//! its first packet.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::handover::Note;

/// Payload bytes per packet (well under the socket's send buffer).
const CHUNK: usize = 48 * 1024;
/// Most bytes one note may take: a connection's held messages are bounded
/// by `actors.migration_buffer_bytes`, its unread input by a read buffer.
const MAX_NOTE: usize = 256 << 20;
/// Most descriptors beside one note: the listeners of every worker.
const MAX_FDS: usize = 2 * crate::config::MAX_WORKERS + 1;
/// Most descriptors one packet may carry (the kernel's SCM_MAX_FD).
const FDS_PER_PACKET: usize = 253;
const MORE: u8 = 1;

pub(crate) struct Channel {
    fd: OwnedFd,
    /// One packet's room, reused: a million connections are a million notes.
    packet: std::cell::RefCell<Vec<u8>>,
}

/// A pair of connected channel ends; the second is meant for the child.
pub(crate) fn pair() -> io::Result<(Channel, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((Channel::from_fd(a), b))
}

impl Channel {
    pub fn from_fd(fd: OwnedFd) -> Channel {
        let packet = std::cell::RefCell::new(vec![0u8; CHUNK + 1]);
        Channel { fd, packet }
    }

    /// Gives up waiting for the peer after `timeout` (`None`: never).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let tv = timeout.map_or(
            libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            |t| libc::timeval {
                tv_sec: t.as_secs() as libc::time_t,
                tv_usec: t.subsec_micros().max(1) as libc::suseconds_t,
            },
        );
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            // SAFETY: `tv` is a valid timeval for the length given.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Sends `note` with `fds` beside it (the caller keeps its copies).
    /// Packets carry at most `CHUNK` bytes and `FDS_PER_PACKET`
    /// descriptors each; a note takes as many as either needs.
    pub fn send(&self, note: &Note, fds: &[RawFd]) -> io::Result<()> {
        debug_assert_eq!(fds.len(), note.descriptors());
        let bytes = note.encode();
        let mut chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        let mut groups: Vec<&[RawFd]> = fds.chunks(FDS_PER_PACKET).collect();
        let packets = chunks.len().max(groups.len()).max(1);
        chunks.resize(packets, &[]);
        groups.resize(packets, &[]);
        for (i, (chunk, group)) in chunks.iter().zip(&groups).enumerate() {
            let flag = if i + 1 < packets { MORE } else { 0 };
            let mut packet = Vec::with_capacity(1 + chunk.len());
            packet.push(flag);
            packet.extend_from_slice(chunk);
            send_packet(&self.fd, &packet, group)?;
        }
        Ok(())
    }

    /// The next note and its descriptors. A note that does not decode, or
    /// whose descriptors do not match it, is an error (its descriptors are
    /// closed).
    pub fn receive(&self) -> io::Result<(Note, Vec<OwnedFd>)> {
        let mut note = BytesMut::new();
        let mut fds = Vec::new();
        loop {
            let mut room = self.packet.borrow_mut();
            let (got, more_fds) = receive_packet(&self.fd, &mut room)?;
            fds.extend(more_fds);
            let packet = &room[..got];
            let Some((&flag, payload)) = packet.split_first() else {
                return Err(bad("an empty packet"));
            };
            if note.len() + payload.len() > MAX_NOTE || fds.len() > MAX_FDS {
                return Err(bad("a note over the size limit"));
            }
            note.extend_from_slice(payload);
            if flag & MORE == 0 {
                break;
            }
        }
        let note = Note::decode(Bytes::from(note)).map_err(|e| bad_owned(e.to_string()))?;
        if fds.len() != note.descriptors() {
            return Err(bad("descriptors do not match the note"));
        }
        Ok((note, fds))
    }
}

fn bad(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn bad_owned(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Room for the control message carrying up to `MAX_FDS` descriptors.
fn control_space() -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE((FDS_PER_PACKET * std::mem::size_of::<RawFd>()) as u32) as usize }
}

fn send_packet(fd: &OwnedFd, packet: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: packet.as_ptr() as *mut libc::c_void,
        iov_len: packet.len(),
    };
    let mut control = vec![0u8; control_space()];
    // SAFETY: msghdr is plain data; every pointer in it refers to a live
    // buffer of the length given, and the CMSG macros stay inside `control`
    // (sized for MAX_FDS descriptors, more than `fds` holds).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let data_len = std::mem::size_of_val(fds);
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(data_len as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
        loop {
            let sent = libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if sent >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives one packet into `packet`; returns its length and descriptors.
fn receive_packet(fd: &OwnedFd, packet: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = vec![0u8; control_space()];
    let mut iov = libc::iovec {
        iov_base: packet.as_mut_ptr().cast(),
        iov_len: packet.len(),
    };
    // SAFETY: as in `send_packet`; the kernel writes at most the lengths
    // given, and descriptors are taken only from SCM_RIGHTS messages it
    // filled, each owned by us from then on.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        let got = loop {
            let n = libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let header = libc::CMSG_LEN(0) as usize;
                let n = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other process closed the upgrade channel",
            ));
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(bad("a packet or its descriptors were cut short"));
        }
        Ok((got, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::ConnRecord;
    use std::io::{Read, Write};

    #[test]
    fn notes_and_their_descriptors_cross() {
        let (a, b) = pair().unwrap();
        let b = Channel::from_fd(b);
        let (mut reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let listeners = Note::Listeners {
            client: 1,
            runner: 1,
        };
        let raw = writer.as_raw_fd();
        a.send(&listeners, &[raw, raw, raw]).unwrap();
        let (note, fds) = b.receive().unwrap();
        assert_eq!((note, fds.len()), (listeners, 3));
        // The descriptor received is the same socket: what is written to
        // it reaches the other end of the pair.
        let mut passed = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
        passed.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn a_note_larger_than_a_packet_arrives_whole() {
        let (a, b) = pair().unwrap();
        let b = Channel::from_fd(b);
        let record = ConnRecord {
            ns: "default".into(),
            name: "echo".into(),
            key: vec!["k".into()],
            actor_awake: true,
            conn_id: 1,
            peer: "127.0.0.1:1".parse().unwrap(),
            hibernatable: true,
            next_index: 0,
            last_acked: 0,
            query: String::new(),
            headers: Vec::new(),
            protocol: None,
            attachment: Bytes::from(vec![7u8; 5 * CHUNK + 3]),
            held: Vec::new(),
            unread: Bytes::new(),
            close: None,
            tls: None,
        };
        let note = Note::Conn(Box::new(record));
        let (fd_source, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        let sender = std::thread::spawn({
            let note = note.clone();
            move || a.send(&note, &[fd_source.as_raw_fd()]).unwrap()
        });
        let (got, fds) = b.receive().unwrap();
        sender.join().unwrap();
        assert_eq!((got, fds.len()), (note, 1));
    }

    #[test]
    fn more_listeners_than_one_packet_carries_arrive_together() {
        let (a, b) = pair().unwrap();
        let b = Channel::from_fd(b);
        let (one, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let listeners = Note::Listeners {
            client: 200,
            runner: 200,
        };
        let fds = vec![one.as_raw_fd(); 401];
        let sender = std::thread::spawn(move || a.send(&listeners, &fds).unwrap());
        let (note, got) = b.receive().unwrap();
        sender.join().unwrap();
        assert_eq!(got.len(), 401);
        assert_eq!(note.descriptors(), 401);
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_hang() {
        let (a, b) = pair().unwrap();
        drop(a);
        let err = Channel::from_fd(b).receive().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
