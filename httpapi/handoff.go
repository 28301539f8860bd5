package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// Handing event streams to another process.
//
// An instance can hand every connection whose first request is an event
// stream to another process on the same machine (a streams instance)
// instead of serving it: the connection itself moves, over a unix socket
// (SCM_RIGHTS), with the bytes already read from it, before any HTTP
// parsing here, and the other process's HTTP server reads it as if it had
// accepted it. The client sees one address and one connection. The two
// processes can then run at different CPU priorities, and a thousand
// streams opening at once cost the first one little more than their
// accepts.

// maxHandoff bounds the bytes handed with a connection: what was read
// from it before the decision (at most a peek buffer).
const maxHandoff = 4 << 10

// HandoffOutcome is what became of one event-stream request at a
// StreamHandoff.
type HandoffOutcome string

const (
	HandoffSent  HandoffOutcome = "sent"  // the connection is the other process's now
	HandoffLocal HandoffOutcome = "local" // it could not be sent (nobody listens): served here
)

// StreamHandoff sends connections to the process listening on a unix
// socket (ListenHandoff). Safe for concurrent use.
type StreamHandoff struct {
	path string
	log  *slog.Logger
	// Observe, if set, is told every outcome.
	Observe func(HandoffOutcome)

	mu   sync.Mutex
	conn *net.UnixConn // nil until dialled, and after a failure
}

// NewStreamHandoff returns a handoff to the unix socket at path. It dials
// on first use and again after a failure. log receives failures (nil:
// discard).
func NewStreamHandoff(path string, log *slog.Logger) *StreamHandoff {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &StreamHandoff{path: path, log: log}
}

// Close closes the connection to the other process.
func (s *StreamHandoff) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

func (s *StreamHandoff) dial() (*net.UnixConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return s.conn, nil
	}
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: s.path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	s.conn = c
	return c, nil
}

func (s *StreamHandoff) broken(c *net.UnixConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		c.Close()
		s.conn = nil
	}
}

func (s *StreamHandoff) observe(o HandoffOutcome) {
	if s.Observe != nil {
		s.Observe(o)
	}
}

// Listener returns l with the event-stream connections taken out: each
// new connection's first bytes are read (up to the end of its request
// line, within headerTimeout) and a connection whose first request is
// GET /api/jobs/{id}/events or GET /api/events goes to the other process
// with those bytes, before any HTTP parsing here; every other connection,
// and one the other process cannot take, is returned by Accept with its
// bytes in front. Only a connection's first request is looked at. The
// other process checks the request (token, id) as it would its own.
func (s *StreamHandoff) Listener(l net.Listener, headerTimeout time.Duration) net.Listener {
	pl := &peekListener{Listener: l, s: s, timeout: headerTimeout, out: make(chan net.Conn), done: make(chan struct{}), errc: make(chan error, 1)}
	go pl.acceptLoop()
	return pl
}

type peekListener struct {
	net.Listener
	s       *StreamHandoff
	timeout time.Duration
	out     chan net.Conn
	done    chan struct{}
	errc    chan error // the inner listener's last error
	once    sync.Once
}

func (pl *peekListener) acceptLoop() {
	for {
		c, err := pl.Listener.Accept()
		if err != nil {
			select {
			case pl.errc <- err:
			case <-pl.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go pl.examine(c)
	}
}

// examine reads c's request line and hands c over, or passes it on.
func (pl *peekListener) examine(c net.Conn) {
	bp := peekBufs.Get().(*[]byte)
	buf := *bp
	n := 0
	c.SetReadDeadline(time.Now().Add(pl.timeout))
	for n < len(buf) && !bytes.Contains(buf[:n], []byte("\n")) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	if isStreamRequest(buf[:n]) {
		if err := pl.s.handOver(c, buf[:n]); err == nil {
			peekBufs.Put(bp)
			c.Close()
			pl.s.observe(HandoffSent)
			return
		}
		pl.s.observe(HandoffLocal)
	}
	read := bytes.Clone(buf[:n])
	peekBufs.Put(bp)
	var pc net.Conn = c
	if len(read) > 0 {
		pc = &prefixedConn{Conn: c, r: io.MultiReader(bytes.NewReader(read), c)}
	}
	select {
	case pl.out <- pc:
	case <-pl.done:
		c.Close()
	}
}

var peekBufs = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// isStreamRequest reports whether b begins with the request line of an
// event-stream GET over HTTP/1.
func isStreamRequest(b []byte) bool {
	line, _, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return false
	}
	method, rest, _ := bytes.Cut(bytes.TrimRight(line, "\r"), []byte(" "))
	target, proto, _ := bytes.Cut(rest, []byte(" "))
	if string(method) != http.MethodGet || !bytes.HasPrefix(proto, []byte("HTTP/1.")) {
		return false
	}
	path, _, _ := bytes.Cut(target, []byte("?"))
	if p := string(path); p == "/api/events" || p == "/api/events/" {
		return true
	}
	id, ok := bytes.CutPrefix(path, []byte("/api/jobs/"))
	if !ok {
		return false
	}
	id, ok = bytes.CutSuffix(id, []byte("/events"))
	return ok && len(id) > 0 && !bytes.Contains(id, []byte("/"))
}

// handOver sends c with the bytes already read from it, dialling the other
// process if need be; on failure the connection is dropped for the next
// attempt to dial again.
func (s *StreamHandoff) handOver(c net.Conn, read []byte) error {
	uc, err := s.dial()
	if err != nil {
		return err
	}
	if err := s.send(uc, c, read); err != nil {
		s.broken(uc)
		s.log.Warn("event stream handoff failed; serving it here", "path", s.path, "err", err)
		return err
	}
	return nil
}

// Accept returns the next connection that stays here.
func (pl *peekListener) Accept() (net.Conn, error) {
	select {
	case c := <-pl.out:
		return c, nil
	case err := <-pl.errc:
		return nil, err
	case <-pl.done:
		return nil, net.ErrClosed
	}
}

// Close closes the inner listener; connections being examined are closed.
func (pl *peekListener) Close() error {
	pl.once.Do(func() { close(pl.done) })
	return pl.Listener.Close()
}

// send passes conn's descriptor and req in one message.
func (s *StreamHandoff) send(uc *net.UnixConn, conn net.Conn, req []byte) error {
	if len(req) > maxHandoff {
		return fmt.Errorf("request of %d bytes exceeds %d", len(req), maxHandoff)
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("connection %T has no descriptor", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	if err := raw.Control(func(fd uintptr) {
		_, _, sendErr = uc.WriteMsgUnix(req, syscall.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	return sendErr
}

// HandoffListener is the net.Listener of the connections other processes
// hand over on a unix socket: serve it with the same http.Server as the
// TCP listener. Safe for concurrent use.
type HandoffListener struct {
	ul   *net.UnixListener
	log  *slog.Logger
	out  chan net.Conn
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// ListenHandoff listens on a unix socket at path, replacing a stale socket
// file left there by a process that is gone. log receives undecodable
// messages (nil: discard).
func ListenHandoff(path string, log *slog.Logger) (*HandoffListener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unixpacket", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process listens there", path)
		}
		os.Remove(path)
	}
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ul.Close()
		return nil, err
	}
	l := &HandoffListener{ul: ul, log: log, out: make(chan net.Conn), done: make(chan struct{})}
	l.wg.Go(l.acceptSenders)
	return l, nil
}

func (l *HandoffListener) acceptSenders() {
	for {
		uc, err := l.ul.AcceptUnix()
		if err != nil {
			return // closed
		}
		l.wg.Go(func() { l.receive(uc) })
	}
}

// receive turns each message of one sender into a connection for Accept.
func (l *HandoffListener) receive(uc *net.UnixConn) {
	defer uc.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-l.done:
			uc.Close()
		case <-stop:
		}
	}()
	buf := make([]byte, maxHandoff+1)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		c, err := handedConn(buf[:n], oob[:oobn], flags)
		if err != nil {
			l.log.Warn("event stream handoff: message dropped", "err", err)
			continue
		}
		select {
		case l.out <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

// handedConn rebuilds the handed connection: the received descriptor, read
// after the request that came with it.
func handedConn(req, oob []byte, flags int) (net.Conn, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := syscall.ParseUnixRights(&m)
		if err != nil {
			return nil, err
		}
		fds = append(fds, got...)
	}
	if len(fds) != 1 || flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0 || len(req) > maxHandoff {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return nil, fmt.Errorf("want one descriptor and a whole request, got %d descriptors, %d bytes, flags %#x", len(fds), len(req), flags)
	}
	f := os.NewFile(uintptr(fds[0]), "handed connection")
	c, err := net.FileConn(f) // a duplicate
	f.Close()
	if err != nil {
		return nil, err
	}
	return &prefixedConn{Conn: c, r: io.MultiReader(bytes.NewReader(bytes.Clone(req)), c)}, nil
}

// prefixedConn reads the bytes the sending process already read, then the
// connection.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Accept returns the next handed connection.
func (l *HandoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.out:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening and drops the senders; it waits for its
// goroutines. Connections already accepted are the server's.
func (l *HandoffListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ul.Close()
		l.wg.Wait()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Addr is the unix socket's address.
func (l *HandoffListener) Addr() net.Addr { return l.ul.Addr() }
