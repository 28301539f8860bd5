package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/retailpulse/retailpulse/events"
)

// The event-stream routes (Server-Sent Events):
//
//	GET /api/jobs/{id}/events   the job's history, then its live events; ends after job_completed
//	GET /api/events             every job's events from ?since=<sequence> (or Last-Event-ID), or from now;
//	                            ?type=a,b keeps only those event types
//
// Each event is a frame
//
//	id: <stream sequence>-<index of the event within its message>
//	event: <event type>
//	data: <the event's fields and job_id, one JSON object>
//
// A Last-Event-ID header (or ?last_event_id=) resumes strictly after that
// position. A comment line is sent every KeepAlive. A client that falls
// behind its buffer gets a final "overflow" event and the stream ends.

// streamTypes are the event types a ?type= filter may name.
var streamTypes = map[events.Type]bool{
	events.TypeJobSubmitted: true, events.TypeJobStarted: true, events.TypeImageProcessed: true,
	events.TypeImageFailed: true, events.TypeJobCompleted: true, events.TypeJobRequeued: true,
}

// position is a place in the log: the event at index idx of the message at
// sequence seq. A stream writes only events after its position.
type position struct {
	seq uint64
	idx int
}

// before returns the position just before the first event of seq.
func before(seq uint64) position {
	if seq == 0 {
		return position{0, math.MaxInt}
	}
	return position{seq - 1, math.MaxInt}
}

// next returns the first sequence that may hold events after p.
func (p position) next() uint64 {
	if p.idx == math.MaxInt {
		return p.seq + 1
	}
	return p.seq
}

func (p position) String() string { return fmt.Sprintf("%d-%d", p.seq, p.idx) }

// parsePosition parses an event id, "<sequence>-<index>".
func parsePosition(s string) (position, error) {
	seqText, idxText, ok := strings.Cut(s, "-")
	seq, err1 := strconv.ParseUint(seqText, 10, 64)
	idx, err2 := strconv.Atoi(idxText)
	if !ok || err1 != nil || err2 != nil || idx < 0 || len(s) > 42 {
		return position{}, fmt.Errorf("event id %q: want <sequence>-<index>, as sent in id:", s)
	}
	return position{seq, idx}, nil
}

// lastEventID returns the resume position of a request: the Last-Event-ID
// header, else ?last_event_id=; ok is false when there is none.
func lastEventID(r *http.Request) (position, bool, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	if v == "" {
		return position{}, false, nil
	}
	p, err := parsePosition(v)
	return p, err == nil, err
}

// frames returns m's SSE frames, one per event, encoding them on first use.
func (m *message) framesOf() [][]byte {
	m.once.Do(func() {
		m.frames = make([][]byte, len(m.rec.Events))
		for i, ev := range m.rec.Events {
			m.frames[i] = encodeFrame(m.rec.Seq, i, m.job, ev)
		}
	})
	return m.frames
}

// encodeFrame returns one event's frame. Its data is the event's JSON
// object with job_id first.
func encodeFrame(seq uint64, idx int, job uint64, ev events.Event) []byte {
	data, err := json.Marshal(ev)
	if err != nil || len(data) < 2 || data[0] != '{' {
		data = []byte("{}")
	}
	b := make([]byte, 0, len(data)+96)
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(idx), 10)
	b = append(b, "\nevent: "...)
	b = append(b, ev.EventType()...)
	b = append(b, "\ndata: {\"job_id\":"...)
	b = strconv.AppendUint(b, job, 10)
	if len(data) > 2 {
		b = append(b, ',')
	}
	b = append(b, data[1:]...)
	return append(b, "\n\n"...)
}

// stream writes one client's events. It belongs to the client's handler
// goroutine.
type stream struct {
	s      *Streams
	w      http.ResponseWriter
	rc     *http.ResponseController
	door   string
	pos    position             // the last event written (or skipped by the filter)
	types  map[events.Type]bool // nil: every type
	job    uint64               // a job stream: ends after this job's job_completed
	ended  bool                 // job_completed written
	sent   int                  // events written, not yet reported
	failed error                // a write failed: the client is gone
	buf    *unsentBuf           // frames not yet handed to the connection; nil when none
	http1  bool                 // an HTTP/1.x request: the body is sent unchunked (open)
}

// maxUnsent is how many bytes of frames a stream gathers before writing
// them: one write (one system call) carries many frames. A larger frame
// is written as it is.
const maxUnsent = 32 << 10

// Streams gather frames in buffers of a few sizes, kept on free lists. A
// stream takes one for its first frame, moves to a larger one when the
// frames outgrow it, and gives it back once written: a thousand idle
// streams hold none, and busy ones allocate no buffer per write, nor while
// growing one. The free lists are bounded (what they cannot take is left
// to the collector) and, unlike a sync.Pool, not emptied by each garbage
// collection: a stream that wrote just after one would allocate, and a
// goroutine that allocates while the collector marks must help it mark. A
// buffer larger than the largest size (a large frame added to gathered
// ones) is not kept.
var unsentSizes = [...]int{4 << 10, 16 << 10, 64 << 10}

var unsentFree = [len(unsentSizes)]chan *unsentBuf{
	make(chan *unsentBuf, 256), // 1 MiB
	make(chan *unsentBuf, 64),  // 1 MiB
	make(chan *unsentBuf, 16),  // 1 MiB
}

type unsentBuf struct{ b []byte }

// getUnsent returns an empty buffer that holds at least n bytes.
func getUnsent(n int) *unsentBuf {
	for i, size := range unsentSizes {
		if n <= size {
			select {
			case b := <-unsentFree[i]:
				return b
			default:
				return &unsentBuf{b: make([]byte, 0, size)}
			}
		}
	}
	return &unsentBuf{b: make([]byte, 0, n)}
}

// putUnsent gives b back to the free list of its size, if it has one with
// room.
func putUnsent(b *unsentBuf) {
	for i, size := range unsentSizes {
		if cap(b.b) == size {
			b.b = b.b[:0]
			select {
			case unsentFree[i] <- b:
			default:
			}
			return
		}
	}
}

var errStreamEnded = errors.New("stream ended")

// write adds the events of m after the stream's position. It stops the
// read that feeds it (errStreamEnded) once a job stream has written its
// job_completed, or a write failed.
func (st *stream) write(m *message) error {
	if m.rec.Seq < st.pos.next() {
		return nil
	}
	if m.err != nil {
		st.s.logger.Error("event streams: undecodable message not sent", "seq", m.rec.Seq, "subject", m.rec.Subject, "err", m.err)
		st.pos = position{m.rec.Seq, math.MaxInt}
		return nil
	}
	frames := m.framesOf()
	for i, ev := range m.rec.Events {
		p := position{m.rec.Seq, i}
		if p.seq == st.pos.seq && i <= st.pos.idx {
			continue
		}
		st.pos = p
		if st.types != nil && !st.types[ev.EventType()] {
			continue
		}
		if err := st.put(frames[i]); err != nil {
			return err
		}
		st.sent++
		if st.job != 0 && ev.EventType() == events.TypeJobCompleted {
			st.ended = true
			return errStreamEnded
		}
	}
	st.pos = position{m.rec.Seq, math.MaxInt}
	return nil
}

// put adds b to what the stream sends next, writing once maxUnsent bytes
// are gathered.
func (st *stream) put(b []byte) error {
	if st.failed != nil {
		return st.failed
	}
	if st.buf == nil {
		if len(b) >= maxUnsent {
			return st.send(b)
		}
		st.buf = getUnsent(len(b))
	}
	if n := len(st.buf.b) + len(b); n > cap(st.buf.b) {
		grown := getUnsent(n)
		grown.b = append(grown.b, st.buf.b...)
		putUnsent(st.buf)
		st.buf = grown
	}
	st.buf.b = append(st.buf.b, b...)
	if len(st.buf.b) >= maxUnsent {
		return st.send(nil)
	}
	return nil
}

// send writes the gathered frames, then b, within the write timeout, and
// gives the buffer back.
func (st *stream) send(b []byte) error {
	if st.failed != nil {
		return st.failed
	}
	var gathered []byte
	if st.buf != nil {
		gathered = st.buf.b
	}
	_ = st.rc.SetWriteDeadline(time.Now().Add(st.s.writeTimeout))
	for _, p := range [][]byte{gathered, b} {
		if len(p) == 0 {
			continue
		}
		if _, err := st.w.Write(p); err != nil {
			st.failed = err
			break
		}
	}
	if st.buf != nil {
		putUnsent(st.buf)
		st.buf = nil
	}
	return st.failed
}

// flush sends what was gathered and reports the events sent.
func (st *stream) flush() error {
	if st.sent > 0 {
		st.s.obs.EventsSent(st.door, st.sent)
		st.sent = 0
	}
	if err := st.send(nil); err != nil {
		return err
	}
	_ = st.rc.SetWriteDeadline(time.Now().Add(st.s.writeTimeout))
	if err := st.rc.Flush(); err != nil {
		st.failed = err
	}
	return st.failed
}

// read feeds a message of a read of the log into the stream.
func (st *stream) read(rec events.Record, err error) error {
	return st.write(newMessage(rec, err))
}

// open starts the response: 200 with text/event-stream, flushed at once so
// the client knows the stream is open. The read deadline of the
// connection is lifted: the server's ReadTimeout would otherwise cancel a
// long stream's context.
//
// Over HTTP/1.1 the body is not chunked: it ends when the connection
// closes, as the SSE specification suggests (net/http does this for
// "Transfer-Encoding: identity"). A chunked write costs three system
// calls (chunk size, data, trailer), an unchunked one a single one, and a
// thousand streams write on every append. Clients tell a stream's end by
// its events (job_completed), never by how the connection ended.
func (st *stream) open() error {
	_ = st.rc.SetReadDeadline(time.Time{})
	h := st.w.Header()
	if st.http1 {
		h.Set("Transfer-Encoding", "identity")
	}
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	st.w.WriteHeader(http.StatusOK)
	return st.flush()
}

// live writes the messages the shared tail hands to sub until the stream
// ends: a job stream's job_completed, the client leaving or falling
// behind, or the service closing the streams. It returns whether the
// client fell behind.
func (st *stream) live(ctx context.Context, sub *subscriber) (overflowed bool) {
	keep := time.NewTicker(st.s.keepAlive)
	defer keep.Stop()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	for {
		select {
		case m := <-sub.ch:
			// Wait for more before writing (one write carries what
			// arrived meanwhile), except for the job's end. Frames are
			// gathered only after the wait, so a waiting stream holds
			// no buffer: a thousand of them would hold a thousand.
			if st.s.linger > 0 && !(st.job != 0 && m.has(events.TypeJobCompleted)) {
				linger.Reset(st.s.linger)
				select {
				case <-linger.C:
				case <-sub.dropped:
				case <-ctx.Done():
				}
				linger.Stop()
			}
			err := st.write(m)
			for err == nil && len(sub.ch) > 0 {
				err = st.write(<-sub.ch)
			}
			if ferr := st.flush(); err != nil || ferr != nil {
				return false
			}
		case <-sub.dropped:
			body, _ := json.Marshal(struct {
				Error       string `json:"error"`
				LastEventID string `json:"last_event_id"`
			}{"the client fell behind the stream; reconnect with Last-Event-ID", st.pos.String()})
			_ = st.put(append(append([]byte("event: overflow\ndata: "), body...), "\n\n"...))
			_ = st.flush()
			return true
		case <-keep.C:
			_ = st.put([]byte(": keep-alive\n\n"))
			if st.flush() != nil {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}

// streamContext is the request's context, also cancelled by Close.
func (s *Streams) streamContext(r *http.Request) (context.Context, func()) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// admit takes a stream slot or answers 503; release gives it back.
func (h *handler) admitStream(w http.ResponseWriter, r *http.Request) bool {
	if h.streams.ctx.Err() != nil {
		h.unavailable(w, r, errors.New("shutting down"), "service is shutting down, retry later")
		return false
	}
	if !h.streams.slots.tryAcquire() {
		h.unavailable(w, r, events.ErrOverloaded, "too many event streams open, retry later")
		return false
	}
	return true
}

// jobEvents handles GET /api/jobs/{id}/events: the job's history from the
// log (after Last-Event-ID if given), then its live events, ending after
// job_completed. A malformed id is 400 {} and an unknown one 404, as
// status answers; a reconnect after the job's last event is 204, which
// tells an EventSource to stop reconnecting.
func (h *handler) jobEvents(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	id, err := events.ParseJobID(mux.Vars(r)["id"])
	if err != nil {
		writeRaw(w, http.StatusBadRequest, emptyObject)
		return
	}
	resume, resumed, err := lastEventID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !resumed {
		resume = before(id)
	}
	if !h.admitStream(w, r) {
		return
	}
	defer h.streams.slots.release()
	if _, err := h.jobs.Status(r.Context(), id); err != nil {
		switch {
		case errors.Is(err, events.ErrJobNotFound):
			writeError(w, http.StatusNotFound, fmt.Sprintf("job %d not found", id))
		case errors.Is(err, events.ErrUnavailable), isContextError(err):
			h.unavailable(w, r, err, logUnavailable)
		default:
			h.internalError(w, r, err)
		}
		return
	}
	s := h.streams
	// Only a resumed stream can be past the job's end (a new one starts
	// before the submission): only then is the log asked where it ends,
	// so a thousand clients opening streams make no requests to it.
	if resumed {
		completed, err := s.log.JobCompleted(r.Context(), id)
		if err != nil {
			h.unavailable(w, r, err, logUnavailable)
			return
		}
		if completed > 0 && resume.seq >= completed {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	st := &stream{s: s, w: w, rc: http.NewResponseController(w), door: DoorJob, pos: resume, job: id, http1: r.ProtoMajor == 1}
	ctx, done := s.streamContext(r)
	defer done()
	if st.open() != nil {
		return
	}
	s.obs.StreamOpened(DoorJob)
	overflowed := false
	defer func() { s.obs.StreamClosed(DoorJob, overflowed) }()
	sub, ok := h.catchUp(ctx, r, st, id, func(from, to uint64, fn func(events.Record, error) error) error {
		return s.log.ReadJob(ctx, id, from, to, fn)
	})
	if !ok {
		return
	}
	defer s.unsubscribe(sub)
	overflowed = st.live(ctx, sub)
}

// catchUp writes the stream's history and subscribes it to the shared
// tail: the log is read (with read) up to where the tail's recent
// messages begin, then the recent messages are written, and the live ones
// follow. It returns false when the stream is already over (a job
// stream's end was written, the client is gone, a read failed).
func (h *handler) catchUp(ctx context.Context, r *http.Request, st *stream, job uint64, read func(from, to uint64, fn func(events.Record, error) error) error) (*subscriber, bool) {
	s := h.streams
	for {
		sub, recent, recentFrom, ok, err := s.join(ctx, job, st.pos.next())
		if err != nil {
			return nil, false
		}
		if ok {
			for _, m := range recent {
				if st.write(m) != nil {
					break
				}
			}
			if st.flush() != nil || st.ended {
				s.unsubscribe(sub)
				return nil, false
			}
			return sub, true
		}
		to := recentFrom - 1
		if !h.history(ctx, r, st, func(fn func(events.Record, error) error) error {
			return read(st.pos.next(), to, fn)
		}) {
			return nil, false
		}
		if st.pos.next() <= to {
			st.pos = position{to, math.MaxInt} // nothing of the stream's there
		}
	}
}

// history runs one read of the log into st and flushes it. It returns
// false when the stream is over: a job stream's end was written, the
// client is gone, or the read failed (logged; the client resumes with
// Last-Event-ID).
func (h *handler) history(ctx context.Context, r *http.Request, st *stream, read func(func(events.Record, error) error) error) bool {
	err := read(st.read)
	ferr := st.flush()
	switch {
	case st.ended || ferr != nil || errors.Is(err, errStreamEnded):
		return false
	case err != nil:
		if ctx.Err() == nil {
			h.streamError(r, err)
		}
		return false
	}
	return true
}

// readAll reads every message in [from, to] once one of the
// MaxHistoryReads is free.
func (s *Streams) readAll(ctx context.Context, from, to uint64, fn func(events.Record, error) error) error {
	select {
	case s.historyReads <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.historyReads }()
	return s.log.ReadAll(ctx, from, to, fn)
}

func (h *handler) streamError(r *http.Request, err error) {
	h.log.Warn("event stream ended by a read error", "path", r.URL.Path, "err", err)
}

// allEvents handles GET /api/events: every job's events after
// Last-Event-ID, or from ?since=<sequence> (inclusive), or from now;
// ?type= (comma-separated, may repeat) keeps only those event types.
func (h *handler) allEvents(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	var types map[events.Type]bool
	for _, v := range q["type"] {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if !streamTypes[events.Type(t)] {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("type %q: not an event type (see docs/events.md)", t))
				return
			}
			if types == nil {
				types = map[events.Type]bool{}
			}
			types[events.Type(t)] = true
		}
	}
	resume, history, err := lastEventID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if since := q.Get("since"); since != "" && !history {
		seq, err := strconv.ParseUint(since, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since %q: want a stream sequence (a non-negative integer)", since))
			return
		}
		resume, history = before(max(seq, 1)), true
	}
	if !h.admitStream(w, r) {
		return
	}
	defer h.streams.slots.release()
	s := h.streams
	st := &stream{s: s, w: w, rc: http.NewResponseController(w), door: DoorAll, types: types, pos: resume, http1: r.ProtoMajor == 1}
	ctx, done := s.streamContext(r)
	defer done()
	if !history {
		end, err := s.log.LastSeq(ctx)
		if err != nil {
			h.unavailable(w, r, err, logUnavailable)
			return
		}
		st.pos = position{end, math.MaxInt} // from now
	}
	if st.open() != nil {
		return
	}
	s.obs.StreamOpened(DoorAll)
	overflowed := false
	defer func() { s.obs.StreamClosed(DoorAll, overflowed) }()
	sub, ok := h.catchUp(ctx, r, st, 0, func(from, to uint64, fn func(events.Record, error) error) error {
		return s.readAll(ctx, from, to, fn)
	})
	if !ok {
		return
	}
	defer s.unsubscribe(sub)
	overflowed = st.live(ctx, sub)
}
