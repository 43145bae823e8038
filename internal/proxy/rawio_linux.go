package proxy

// rawIO: the proxy's sockets use rawConn.
const rawIO = true
