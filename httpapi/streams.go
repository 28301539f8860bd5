package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// EventLog is the event log as the event-stream routes read it. Every read
// hands each message to fn as a record with the error of decoding its body
// (nil when it decoded), in stream order, on the caller's goroutine; fn
// returning an error stops the read with that error; cancelling ctx stops
// it with ctx.Err(). Implementations are safe for concurrent use.
type EventLog interface {
	// LastSeq returns the log's last sequence.
	LastSeq(ctx context.Context) (uint64, error)
	// JobCompleted returns the sequence of the job's job_completed message,
	// or 0 while it has none.
	JobCompleted(ctx context.Context, id uint64) (uint64, error)
	// ReadJob reads the job's messages (its submission at sequence id, then
	// the messages on its subjects) with sequences in [from, to].
	ReadJob(ctx context.Context, id, from, to uint64, fn func(events.Record, error) error) error
	// ReadAll reads every message with a sequence in [from, to].
	ReadAll(ctx context.Context, from, to uint64, fn func(events.Record, error) error) error
	// Tail reads every message stored after sequence after, live, until ctx
	// ends or fn fails.
	Tail(ctx context.Context, after uint64, fn func(events.Record, error) error) error
}

// The doors of StreamObserver: the event-stream routes.
const (
	DoorJob = "sse_job" // GET /api/jobs/{id}/events
	DoorAll = "sse_all" // GET /api/events
)

// StreamObserver is told about event streams (for metrics). Door is DoorJob
// or DoorAll. Implementations are safe for concurrent use.
type StreamObserver interface {
	StreamOpened(door string)
	// StreamClosed: overflowed is true when the client fell behind.
	StreamClosed(door string, overflowed bool)
	EventsSent(door string, n int)
}

// Defaults of StreamsConfig.
const (
	DefaultMaxStreams      = 1000
	DefaultStreamBuffer    = 256
	DefaultKeepAlive       = 15 * time.Second
	DefaultStreamWrite     = 10 * time.Second
	DefaultMaxHistoryReads = 32
	DefaultLinger          = 50 * time.Millisecond
	DefaultStallTimeout    = 5 * time.Second
	DefaultRecent          = 8192
	DefaultRecentBytes     = 32 << 20
)

// StreamsConfig configures NewStreams. Only Log is required; a zero field
// takes its default.
type StreamsConfig struct {
	Log EventLog
	// MaxStreams bounds the event streams open at once, over both routes;
	// beyond it a request is answered 503 with Retry-After. Default
	// DefaultMaxStreams.
	MaxStreams int
	// Buffer is how many messages may wait for one client. A client whose
	// buffer is full when a message arrives has fallen behind: it is sent
	// a final "overflow" event and its stream ends. Default
	// DefaultStreamBuffer.
	Buffer int
	// KeepAlive is the interval of the comment line that keeps proxies
	// from closing an idle stream. Default DefaultKeepAlive.
	KeepAlive time.Duration
	// WriteTimeout bounds each write to a client (it replaces the server's
	// WriteTimeout, which would cut every stream). Default
	// DefaultStreamWrite.
	WriteTimeout time.Duration
	// Observer, if set, is told about streams.
	Observer StreamObserver
	// Linger is how long a stream waits, after a live message, for more
	// before writing them together: fewer writes and wake-ups for many
	// streams, at the cost of that much latency. Default DefaultLinger;
	// negative: none.
	Linger time.Duration
	// Recent and RecentBytes bound the most recent messages the shared tail
	// keeps, decoded and shared by every client: a stream whose history
	// starts among them reads it from memory, not from the log. Defaults
	// DefaultRecent and DefaultRecentBytes (an estimate of the events'
	// size).
	Recent      int
	RecentBytes int64
	// MaxHistoryReads bounds the reads of every job's history (GET
	// /api/events with since or Last-Event-ID) running at once: each holds
	// one of the stream's consumers, which the stream does not limit in
	// number but each of which costs the server memory and work. Further
	// streams wait for a free read. Default DefaultMaxHistoryReads.
	MaxHistoryReads int
	// StallTimeout: a tail that hands out nothing for this long while the
	// log holds messages beyond it is restarted where it stopped (a reader
	// whose server died, which the client library does not always notice).
	// Default DefaultStallTimeout; negative: never.
	StallTimeout time.Duration
	// Logger receives read errors and undecodable messages. Default:
	// discard.
	Logger *slog.Logger
	// OnMessage, if set, is handed every message of the shared tail that
	// decoded, in stream order, on Run's goroutine: live activity for
	// whoever counts it (the dashboard's statistics). It must not block.
	OnMessage func(events.Record)
}

// Streams serves the event-stream routes. One shared tail of the log (Run)
// hands each message to the clients that want it, without ever waiting
// for one, and keeps the most recent messages, decoded and encoded once
// for every client. Each client's handler goroutine writes its stream:
// history older than the recent messages read from the log, then the
// recent ones, then the live ones from its bounded buffer. Create it with
// NewStreams, pass it in Config.Streams, and run Run (once) for as long as
// the handler serves. Safe for concurrent use.
type Streams struct {
	log          EventLog
	obs          StreamObserver
	logger       *slog.Logger
	buffer       int
	keepAlive    time.Duration
	writeTimeout time.Duration
	linger       time.Duration
	stall        time.Duration
	slots        semaphore
	historyReads chan struct{}
	recentMax    int
	recentBytes  int64
	onMessage    func(events.Record)

	ctx    context.Context // cancelled by Close: every stream ends
	cancel context.CancelFunc

	started chan struct{} // closed once pos is known
	mu      sync.Mutex
	pos     uint64 // sequence of the last message handed out
	all     map[*subscriber]struct{}
	byJob   map[uint64]map[*subscriber]struct{}
	// The most recent messages handed out, oldest first: every message with
	// a sequence from recentFrom to pos. recentSize estimates their bytes.
	recent     []*message
	recentFrom uint64
	recentSize int64
}

// NewStreams validates cfg and returns the event-stream service.
func NewStreams(cfg StreamsConfig) (*Streams, error) {
	if cfg.Log == nil {
		return nil, errors.New("httpapi: StreamsConfig.Log is required")
	}
	if cfg.MaxStreams < 0 || cfg.Buffer < 0 || cfg.KeepAlive < 0 || cfg.WriteTimeout < 0 || cfg.MaxHistoryReads < 0 ||
		cfg.Recent < 0 || cfg.RecentBytes < 0 {
		return nil, errors.New("httpapi: stream limits must not be negative")
	}
	s := &Streams{
		log: cfg.Log, obs: cfg.Observer, logger: cfg.Logger,
		buffer: cfg.Buffer, keepAlive: cfg.KeepAlive, writeTimeout: cfg.WriteTimeout,
		onMessage: cfg.OnMessage,
		started:   make(chan struct{}),
		all:       map[*subscriber]struct{}{},
		byJob:     map[uint64]map[*subscriber]struct{}{},
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	s.slots = newSemaphore(cfg.MaxStreams)
	if cfg.MaxHistoryReads == 0 {
		cfg.MaxHistoryReads = DefaultMaxHistoryReads
	}
	s.historyReads = make(chan struct{}, cfg.MaxHistoryReads)
	s.recentMax, s.recentBytes = cfg.Recent, cfg.RecentBytes
	if s.recentMax == 0 {
		s.recentMax = DefaultRecent
	}
	if s.recentBytes == 0 {
		s.recentBytes = DefaultRecentBytes
	}
	if s.buffer == 0 {
		s.buffer = DefaultStreamBuffer
	}
	if s.keepAlive == 0 {
		s.keepAlive = DefaultKeepAlive
	}
	if s.writeTimeout == 0 {
		s.writeTimeout = DefaultStreamWrite
	}
	switch s.stall = cfg.StallTimeout; {
	case s.stall == 0:
		s.stall = DefaultStallTimeout
	case s.stall < 0:
		s.stall = 0
	}
	switch s.linger = cfg.Linger; {
	case s.linger == 0:
		s.linger = DefaultLinger
	case s.linger < 0:
		s.linger = 0
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

type nopObserver struct{}

func (nopObserver) StreamOpened(string)       {}
func (nopObserver) StreamClosed(string, bool) {}
func (nopObserver) EventsSent(string, int)    {}

// Run tails the log from its current end and hands every message to the
// subscribed clients, until ctx ends; an interrupted tail is resumed after
// the last message handed out, so clients miss nothing. When Run returns,
// every stream has been told to end (as by Close). It returns nil.
func (s *Streams) Run(ctx context.Context) error {
	defer s.Close()
	for {
		after, err := s.log.LastSeq(ctx)
		if err == nil {
			s.mu.Lock()
			s.pos, s.recentFrom = after, after+1
			s.mu.Unlock()
			close(s.started)
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.logger.Warn("event streams: cannot read the log's end; retrying", "err", err)
		if !sleepCtx(ctx, time.Second) {
			return nil
		}
	}
	for {
		s.mu.Lock()
		after := s.pos
		s.mu.Unlock()
		tctx, stalled := context.WithCancelCause(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			s.watch(tctx, stalled)
		}()
		err := s.log.Tail(tctx, after, s.dispatch)
		stalled(nil)
		<-watched
		if ctx.Err() != nil {
			return nil
		}
		if cause := context.Cause(tctx); errors.Is(cause, errTailStalled) {
			err = cause
		}
		s.logger.Warn("event streams: tail of the log interrupted; resuming", "after", after, "err", err)
		if !sleepCtx(ctx, time.Second) {
			return nil
		}
	}
}

var errTailStalled = errors.New("event streams: the tail stalled behind the log")

// watch ends a tail (through stop) that hands out nothing for the stall
// timeout while the log holds messages beyond it. Returns when ctx ends.
func (s *Streams) watch(ctx context.Context, stop context.CancelCauseFunc) {
	if s.stall <= 0 {
		return
	}
	t := time.NewTicker(s.stall / 4)
	defer t.Stop()
	pos := func() uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.pos
	}
	last, since := pos(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p := pos(); p != last {
			last, since = p, time.Now()
			continue
		}
		if time.Since(since) < s.stall {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, s.stall/4)
		end, err := s.log.LastSeq(lctx)
		cancel()
		if err == nil && end > last {
			stop(fmt.Errorf("%w: handed out %d, the log holds %d", errTailStalled, last, end))
			return
		}
		since = time.Now() // idle, or the log cannot say: look again later
	}
}

// Close ends every open stream and refuses new ones with 503. Call it when
// the HTTP server shuts down (http.Server.RegisterOnShutdown), so that
// streams do not hold the shutdown up. Safe to call more than once.
func (s *Streams) Close() { s.cancel() }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// subscriber is one client's subscription to the shared tail.
type subscriber struct {
	job     uint64        // 0: every job
	ch      chan *message // the client's bounded buffer
	dropped chan struct{} // closed when a message found ch full
}

// message is one message of the log as clients receive it. Its SSE frames
// are encoded once, by the first client that writes it, and shared.
type message struct {
	rec    events.Record
	err    error  // decoding the body failed
	job    uint64 // the job it belongs to
	size   int64  // estimated bytes
	once   sync.Once
	frames [][]byte
}

// has reports whether one of m's events is of type t.
func (m *message) has(t events.Type) bool {
	for _, ev := range m.rec.Events {
		if ev.EventType() == t {
			return true
		}
	}
	return false
}

func newMessage(rec events.Record, err error) *message {
	m := &message{rec: rec, err: err, size: 64}
	if rec.Subject == events.SubjectSubmitted {
		m.job = rec.Seq
	} else if id, _, ok := events.ParseJobSubject(rec.Subject); ok {
		m.job = id
	}
	for _, ev := range rec.Events {
		m.size += 160
		if sub, ok := ev.(*events.JobSubmitted); ok {
			for _, v := range sub.Visits {
				m.size += int64(len(v.StoreID) + len(v.VisitTime) + 32)
				for _, u := range v.ImageURLs {
					m.size += int64(len(u) + 8)
				}
			}
		}
	}
	return m
}

// dispatch hands a message of the tail to every client that wants it. A
// client whose buffer is full is dropped: it never slows the tail or
// anyone else.
func (s *Streams) dispatch(rec events.Record, err error) error {
	if err == nil && s.onMessage != nil {
		s.onMessage(rec)
	}
	m := newMessage(rec, err)
	s.mu.Lock()
	wanted := len(s.all) > 0 || len(s.byJob[m.job]) > 0
	s.mu.Unlock()
	if wanted && m.err == nil {
		// Encoded here, once, rather than by the first client to write
		// it: a client's goroutine then allocates nothing per message
		// (and so never has to help the collector mark). Outside the
		// lock: streams opening meanwhile do not wait for it.
		m.framesOf()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pos = rec.Seq
	s.remember(m)
	for c := range s.all {
		s.offer(c, m)
	}
	if m.job != 0 {
		for c := range s.byJob[m.job] {
			s.offer(c, m)
		}
	}
	return nil
}

// offer sends m to c without waiting; s.mu is held.
func (s *Streams) offer(c *subscriber, m *message) {
	select {
	case c.ch <- m:
	default:
		s.removeLocked(c)
		close(c.dropped)
	}
}

// remember keeps m among the recent messages, forgetting the oldest
// beyond the bounds; s.mu is held.
func (s *Streams) remember(m *message) {
	s.recent = append(s.recent, m)
	s.recentSize += m.size
	drop := 0
	for len(s.recent)-drop > s.recentMax || (s.recentSize > s.recentBytes && len(s.recent)-drop > 1) {
		s.recentSize -= s.recent[drop].size
		drop++
	}
	if drop > 0 {
		s.recentFrom = s.recent[drop].rec.Seq
		clear(s.recent[:drop])
		s.recent = s.recent[drop:]
	}
}

// join subscribes a client for job (0: every job) whose history is
// complete up to sequence from-1, once the tail has started. When the
// recent messages reach back to from, it returns the client and the
// recent messages of job from sequence from on (ok): with the live
// messages the client then receives, nothing is missing. Otherwise it
// subscribes nothing and returns the sequence the recent messages start
// at: the caller reads the log up to it and joins again.
func (s *Streams) join(ctx context.Context, job, from uint64) (sub *subscriber, recent []*message, recentFrom uint64, ok bool, err error) {
	select {
	case <-s.started:
	case <-ctx.Done():
		return nil, nil, 0, false, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if from < s.recentFrom {
		return nil, nil, s.recentFrom, false, nil
	}
	i := sort.Search(len(s.recent), func(i int) bool { return s.recent[i].rec.Seq >= from })
	for _, m := range s.recent[i:] {
		if job == 0 || m.job == job {
			recent = append(recent, m)
		}
	}
	c := &subscriber{job: job, ch: make(chan *message, s.buffer), dropped: make(chan struct{})}
	if job == 0 {
		s.all[c] = struct{}{}
	} else {
		set := s.byJob[job]
		if set == nil {
			set = map[*subscriber]struct{}{}
			s.byJob[job] = set
		}
		set[c] = struct{}{}
	}
	return c, recent, 0, true, nil
}

// unsubscribe removes c (if the tail has not dropped it already).
func (s *Streams) unsubscribe(c *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(c)
}

func (s *Streams) removeLocked(c *subscriber) {
	if c.job == 0 {
		delete(s.all, c)
		return
	}
	if set := s.byJob[c.job]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(s.byJob, c.job)
		}
	}
}

// subscribers returns the number of clients subscribed to the tail.
func (s *Streams) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.all)
	for _, set := range s.byJob {
		n += len(set)
	}
	return n
}
