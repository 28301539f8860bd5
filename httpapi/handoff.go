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
)

// Handing event streams to another process.
//
// An instance can hand every event-stream request it receives to another
// process on the same machine (a streams instance) instead of serving it:
// the connection itself moves, over a unix socket (SCM_RIGHTS), with the
// request re-encoded in front of it, and the other process's HTTP server
// reads it as if it had accepted the connection. The client sees one
// address and one connection. The two processes can then run at different
// CPU priorities, so that a thousand streams opening at once do not hold
// up the requests the first one serves.

// maxHandoff bounds one handed request: the server's header limit plus
// what its reader may have buffered beyond the request.
const maxHandoff = 64<<10 + 8<<10

// HandoffOutcome is what became of one event-stream request at a
// StreamHandoff.
type HandoffOutcome string

const (
	HandoffSent   HandoffOutcome = "sent"   // the connection is the other process's now
	HandoffLocal  HandoffOutcome = "local"  // nobody listens: served here
	HandoffFailed HandoffOutcome = "failed" // sending failed after the hijack: answered 503
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

// wrap hands the requests of next's route to the other process: GET
// requests over HTTP/1 on a TCP connection, when the other process can be
// reached. Anything else, or when it cannot be, is served by next.
func (s *StreamHandoff) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.ProtoMajor != 1 {
			next.ServeHTTP(w, r)
			return
		}
		uc, err := s.dial()
		if err != nil {
			s.observe(HandoffLocal)
			next.ServeHTTP(w, r)
			return
		}
		var req bytes.Buffer
		if err := r.Write(&req); err != nil { // a GET has no body to lose
			next.ServeHTTP(w, r)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			s.observe(HandoffLocal)
			next.ServeHTTP(w, r)
			return
		}
		defer conn.Close()
		if n := rw.Reader.Buffered(); n > 0 { // pipelined bytes belong to the other process too
			b, _ := rw.Reader.Peek(n)
			req.Write(b)
		}
		if err := s.send(uc, conn, req.Bytes()); err != nil {
			s.broken(uc)
			s.observe(HandoffFailed)
			s.log.Warn("event stream handoff failed; answered 503", "path", s.path, "err", err)
			const body = `{"error":"event streams unavailable, retry later"}`
			fmt.Fprintf(conn, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			return
		}
		s.observe(HandoffSent)
	})
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
