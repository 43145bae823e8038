package proxy

import "golang.org/x/sys/unix"

// rawIO: the proxy's sockets use rawConn.
const rawIO = true

// peerClosed reports whether the peer of the TCP socket fd closed it (a
// FIN or a reset came), whatever bytes wait before that end: TCP's state
// says so where a peek sees only those bytes. False for other sockets
// (a unix socket: unknown).
func peerClosed(fd uintptr) bool {
	ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false
	}
	// Linux's TCP states (include/net/tcp_states.h) once the peer's FIN
	// or reset came: CLOSE (7), CLOSE_WAIT (8), LAST_ACK (9), CLOSING (11).
	switch ti.State {
	case 7, 8, 9, 11:
		return true
	}
	return false
}
