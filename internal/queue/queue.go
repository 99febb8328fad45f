// Package queue is mailgate's durable outbound mail queue (SPEC §8,
// DATA/queue): Enqueue returns only when a message and its envelope are on
// stable storage, a delivery loop hands due messages to a pluggable
// Deliverer and retries temporary failures with exponential back-off, and a
// permanent failure or expiry produces a delivery status notification
// (RFC 3464) for a Bouncer. A restart resumes every message not fully
// delivered; nothing acknowledged is lost, whatever moment the process or
// the machine dies.
//
// # Group commit
//
// The queue is a log. Every change — a new message, the outcome of a
// delivery attempt — is one record appended to the active segment file by a
// single committer goroutine. The committer takes every request waiting at
// that moment, writes them with one write(2) and makes them durable with one
// fsync(2), then answers all of them: N concurrent Enqueue calls cost one
// fsync, not N (nor 2N + directory fsyncs, as a file per message would).
// While one batch is being fsynced the next one accumulates; there is no
// timer and no added latency for a lone caller.
//
// The outcome of a delivery attempt is written at once but not fsynced on
// its own: it becomes durable with the next fsync (a new message, a segment
// rotation, Close, or one second later at most). A crash can lose such a
// record, and then the attempt is simply made again: a possible duplicate,
// never a loss. Only new messages wait for their fsync, so a message costs
// one fsync (shared) instead of two.
//
// # On-disk format
//
// DATA/queue contains:
//
//	lock             flock(2)ed exclusively while the queue is open (a second
//	                 process opening the queue fails instead of corrupting it)
//	00000001.seg     log segments, numbered from 1 (8 decimal digits); replayed
//	00000002.seg     in numeric order on Open; the highest is the active one
//	…
//
// A segment starts with the 8-byte magic "MGQSEG1\n", followed by records:
//
//	offset  size  field
//	0       4     n: length of the payload, big-endian uint32
//	4       4     CRC-32C (Castagnoli) of the type byte and the payload, big-endian
//	8       1     type: 'M' message or 'S' state
//	9       n     payload
//
// 'M' (message) payload: a 4-byte big-endian length m, m bytes of JSON
// metadata, then the message itself exactly as given to Enqueue (with the
// SMTP server: CRLF line endings, dot-unstuffed). The metadata:
//
//	{"id":"…", "from":"sender or empty for <>", "to":["rcpt",…],
//	 "arrival":<unix ns>, "envid":"…", "ret":"FULL|HDRS", "smtputf8":true,
//	 "body":"8BITMIME", "size":<bytes of the message>,
//	 "rcpts":[<rcpt state>,…]}
//
// "rcpts" is absent in a fresh message (every recipient pending, due at
// arrival); a compacted copy (see below) carries the state of every
// recipient at the time it was copied.
//
// 'S' (state) payload: JSON {"id":"…","r":[<rcpt state>,…]}: the new state
// of the recipients named by index after a delivery attempt or a bounce. A
// recipient state is
//
//	{"i":<index in "to">, "st":"pending|delivered|failed", "n":<attempts>,
//	 "next":<unix ns of next attempt>, "at":<unix ns of last attempt>,
//	 "notified":true (failed: the DSN was handed to the Bouncer, or none
//	 was due), "expired":true, "last":true (an outcome is recorded, in:)
//	 "code":550, "enh":"5.1.1", "msg":"…", "remote":"mx.example.net",
//	 "temp":true}
//
// Times are Unix nanoseconds; a zero or absent field is its zero value.
//
// Unknown JSON fields are ignored, so fields can be added compatibly.
//
// # Recovery (Open)
//
// Segments are read in order; each record's length and CRC are checked. A
// record that is incomplete or fails its CRC marks the end of what was ever
// acknowledged: an acknowledgement follows an fsync that covers every byte
// before it, so a torn record is the tail of a batch that nobody was told
// about. In the last segment the file is truncated there (and fsynced); in an
// earlier segment — which only disk corruption can produce — the rest of that
// segment is skipped and the damage is logged. A last segment shorter than
// its magic (created, not yet durable) is removed. 'M' records create a
// message, or replace an earlier copy of the same ID; 'S' records update
// the message named, and are ignored for an ID that is not (or no longer)
// known. A message whose recipients are all delivered, or failed and
// notified, is finished and forgotten. The last segment stays the active one
// unless it is full (then, or when there is none, Open creates the next).
//
// # Segment deletion and compaction
//
// A segment is deleted once it and every older segment hold no live message
// (deletion only ever removes the oldest segments, so no 'S' record is lost
// while the 'M' record it modifies survives; the directory is fsynced after
// the unlink). A long-retrying message would pin every younger segment, so
// when the oldest inactive segment is at most a quarter live, its live
// messages are copied — with their current state — into the active segment,
// and then the old segment is deleted. A crash between copy and deletion
// leaves two copies; the later one wins on replay.
//
// # Delivery
//
// The delivery loop (Run) keeps the messages in a heap ordered by the time
// their next recipient is due and gives each due message to one worker
// (Options.Concurrency at a time; a message is never in two deliveries at
// once). The worker calls the Deliverer with the recipients that are due,
// records every outcome in one 'S' record, and bounces if needed:
//
//   - a 2xx reply: delivered;
//   - a temporary failure (Result.Temporary or a 4xx reply, RFC 5321 §4.2.1):
//     attempts+1, next attempt after min(Base·2^(attempts-1), Cap) and never
//     after the expiry time; if the message is older than Options.Expiry
//     (default 5 days, Postfix's maximal_queue_lifetime) the recipient fails
//     as expired;
//   - a permanent failure (5xx): failed.
//
// Failed recipients are reported to the sender in one DSN per attempt
// (multipart/report, RFC 3464 / RFC 6522), handed to the Bouncer; only when
// the Bouncer returns nil are they marked notified. A message from the null
// sender is never bounced (RFC 5321 §4.5.5, RFC 3464 §1: no DSN about a DSN).
// Delivery is at least once: a crash after a remote server accepted a
// message and before the 'S' record is durable delivers it again on restart
// (RFC 5321 §6.1 prefers duplicates to losses).
package queue

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned (wrapped) by Enqueue and Open.
var (
	ErrClosed      = errors.New("queue: closed")
	ErrBroken      = errors.New("queue: a write to the queue failed; reopen the queue")
	ErrTooLarge    = errors.New("queue: message too large")
	ErrInvalid     = errors.New("queue: invalid envelope")
	ErrLocked      = errors.New("queue: directory in use by another process")
	ErrCorruptFile = errors.New("queue: not a queue segment")
)

// Envelope is the SMTP envelope of a queued message.
type Envelope struct {
	From     string    // reverse-path without angle brackets; "" is the null sender <>
	To       []string  // forward-paths; duplicates are dropped by Enqueue
	EnvID    string    // RFC 3461 ENVID, echoed as Original-Envelope-Id in a DSN
	Ret      string    // RFC 3461 RET: "FULL" returns the whole message in a DSN, else headers only
	SMTPUTF8 bool      // RFC 6531: the message needs SMTPUTF8
	BodyType string    // RFC 6152 BODY= parameter ("7BIT", "8BITMIME"), "" if not given
	Arrival  time.Time // set by Enqueue when zero (Options.Now)
}

// Result is the outcome of a delivery attempt for one recipient.
type Result struct {
	Rcpt      string // the recipient, as passed to Deliver
	Code      int    // SMTP reply code (RFC 5321 §4.2); 0 when no reply was received
	Enhanced  string // enhanced status code (RFC 3463), "5.1.1"; "" if none
	Msg       string // the reply text, or a description of the local error
	Temporary bool   // a temporary failure even without a 4xx code (connection refused, timeout, …)
	RemoteMTA string // host name of the server that replied, for the DSN's Remote-MTA; "" if none
}

// Deliverer delivers one message to some of its recipients. It must return a
// Result for every recipient; a missing one counts as a temporary failure.
// Deliver is called from several goroutines at once. The envelope of the
// message (ESMTP parameters) is available through EnvelopeFromContext.
type Deliverer interface {
	Deliver(ctx context.Context, from string, rcpts []string, body io.Reader) []Result
}

// DelivererFunc adapts a function to Deliverer.
type DelivererFunc func(ctx context.Context, from string, rcpts []string, body io.Reader) []Result

// Deliver calls f.
func (f DelivererFunc) Deliver(ctx context.Context, from string, rcpts []string, body io.Reader) []Result {
	return f(ctx, from, rcpts, body)
}

// Bouncer receives the delivery status notifications to send. It returns
// nil only once the DSN is itself safely queued or delivered; an error makes
// the queue try again later.
type Bouncer interface {
	Bounce(ctx context.Context, dsn *DSN) error
}

// BouncerFunc adapts a function to Bouncer.
type BouncerFunc func(ctx context.Context, dsn *DSN) error

// Bounce calls f.
func (f BouncerFunc) Bounce(ctx context.Context, dsn *DSN) error { return f(ctx, dsn) }

// Options configure a Queue. Zero values mean the defaults.
type Options struct {
	Deliverer   Deliverer     // required for Run and RunOnce
	Bouncer     Bouncer       // nil: failures are logged and not reported
	Hostname    string        // Reporting-MTA and DSN From; default os.Hostname()
	Concurrency int           // deliveries at once; default 8
	BackoffBase time.Duration // first retry delay; default 5 minutes (Postfix minimal_backoff_time)
	BackoffCap  time.Duration // longest retry delay; default 4000 s (Postfix maximal_backoff_time)
	Expiry      time.Duration // give up and bounce after; default 5 days (Postfix maximal_queue_lifetime)
	MaxSize     int64         // largest message accepted by Enqueue; default 64 MiB
	SegmentSize int64         // start a new segment file beyond; default 64 MiB
	Now         func() time.Time
	Logger      *slog.Logger
}

// Defaults.
const (
	DefaultConcurrency = 8
	DefaultBackoffBase = 5 * time.Minute
	DefaultBackoffCap  = 4000 * time.Second
	DefaultExpiry      = 5 * 24 * time.Hour
	DefaultMaxSize     = 64 << 20
	DefaultSegmentSize = 64 << 20
)

// Queue is an open queue directory. Its methods are safe for concurrent use.
type Queue struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *os.File

	reqs  chan *commit    // to the committer; unbuffered
	quit  chan struct{}   // closed by Close
	cdon  chan struct{}   // closed when the committer has stopped
	dirty bool            // committer only: lazy records written since the last fsync
	wake  chan struct{}   // 1-buffered: new work for Run
	ctx   context.Context // canceled by Close: stops deliveries
	stop  context.CancelFunc

	closeOnce sync.Once
	workers   sync.WaitGroup

	// committer-owned (the active segment is also read under mu)
	buf    []byte
	broken error
	syncs  atomic.Int64 // fsyncs of the log, for tests and benchmarks
	lastID atomic.Int64 // microseconds of the last ID

	mu      sync.Mutex
	msgs    map[string]*message
	segs    map[uint32]*segment // every segment file, by number
	active  *segment
	due     msgHeap // messages waiting, not busy
	running int     // workers busy
	closed  bool
}

// Open opens (creating it if needed) the queue directory dir and recovers
// its content (see the package comment). Only one Queue may have a
// directory open at a time, across processes.
func Open(dir string, opts Options) (*Queue, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = DefaultBackoffBase
	}
	if opts.BackoffCap <= 0 {
		opts.BackoffCap = DefaultBackoffCap
	}
	if opts.BackoffCap < opts.BackoffBase {
		opts.BackoffCap = opts.BackoffBase
	}
	if opts.Expiry <= 0 {
		opts.Expiry = DefaultExpiry
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.MaxSize > maxRecord-64<<10 {
		opts.MaxSize = maxRecord - 64<<10
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		opts.Hostname = h
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "queue")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue: creating %s: %w", dir, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil { // the entry of a new dir
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	q := &Queue{
		dir: dir, opts: opts, log: log, lock: lock,
		reqs: make(chan *commit), quit: make(chan struct{}), cdon: make(chan struct{}),
		wake: make(chan struct{}, 1), ctx: ctx, stop: stop,
		msgs: map[string]*message{}, segs: map[uint32]*segment{},
	}
	if err := q.recover(); err != nil {
		q.closeSegments()
		stop()
		lock.Close()
		return nil, err
	}
	go q.committer()
	return q, nil
}

// Close stops the delivery workers (their context is canceled and they are
// waited for), stops the committer and closes the files. Messages stay in
// the queue. Run returns once Close was called.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		q.stop()
		q.workers.Wait()
		close(q.quit)
		<-q.cdon
		q.closeSegments()
		q.lock.Close() // releases the flock
	})
	return nil
}

// Enqueue reads the message from body and appends it with env to the
// queue. It returns the queue ID only once message and envelope are
// durable — the SMTP server may then reply 250 — and an error otherwise,
// after which nothing was acknowledged (the caller replies 451). Concurrent
// calls share their fsync (group commit).
func (q *Queue) Enqueue(env Envelope, body io.Reader) (id string, err error) {
	env, err = q.checkEnvelope(env)
	if err != nil {
		return "", err
	}
	data, err := io.ReadAll(io.LimitReader(body, q.opts.MaxSize+1))
	if err != nil {
		return "", fmt.Errorf("queue: reading message: %w", err)
	}
	if int64(len(data)) > q.opts.MaxSize {
		return "", fmt.Errorf("%w (over %d bytes)", ErrTooLarge, q.opts.MaxSize)
	}
	if env.Arrival.IsZero() {
		env.Arrival = q.opts.Now()
	}
	id = q.newID(env.Arrival)
	m := &message{id: id, env: env, size: int64(len(data)), rcpts: make([]rcptState, len(env.To)), heapIdx: -1}
	for i := range m.rcpts {
		m.rcpts[i] = rcptState{status: Pending, next: env.Arrival}
	}
	rec, bodyOff, err := encodeMessage(m, data, false)
	if err != nil {
		return "", err
	}
	c := &commit{recs: [][]byte{rec}, apply: func(locs []loc) {
		m.seg, m.off = locs[0].seg, locs[0].off+bodyOff
		q.addLocked(m)
		q.scheduleLocked(m)
	}}
	if err := q.submit(c); err != nil {
		return "", err
	}
	q.kick()
	return id, nil
}

// checkEnvelope validates env and drops duplicate recipients.
func (q *Queue) checkEnvelope(env Envelope) (Envelope, error) {
	if env.From != "" {
		if err := checkPath(env.From); err != nil {
			return env, fmt.Errorf("%w: sender %q: %v", ErrInvalid, env.From, err)
		}
	}
	if len(env.To) == 0 {
		return env, fmt.Errorf("%w: no recipients", ErrInvalid)
	}
	seen := make(map[string]bool, len(env.To))
	to := make([]string, 0, len(env.To))
	for _, r := range env.To {
		if err := checkPath(r); err != nil {
			return env, fmt.Errorf("%w: recipient %q: %v", ErrInvalid, r, err)
		}
		if !seen[r] {
			seen[r] = true
			to = append(to, r)
		}
	}
	env.To = to
	for _, v := range []string{env.EnvID, env.Ret, env.BodyType} {
		if err := checkText(v, 100); err != nil {
			return env, fmt.Errorf("%w: parameter %q: %v", ErrInvalid, v, err)
		}
	}
	return env, nil
}

// checkPath accepts an address for the envelope: local@domain, without
// white space, controls or angle brackets (the SMTP server has validated it
// already; this keeps the log and the DSN well-formed).
func checkPath(s string) error {
	if len(s) > 320 {
		return errors.New("too long")
	}
	at := -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c == 0x7f || c == '<' || c == '>':
			return fmt.Errorf("byte 0x%02x at offset %d", c, i)
		case c == '@':
			at = i
		}
	}
	if at <= 0 || at == len(s)-1 {
		return errors.New("not local@domain")
	}
	return nil
}

// checkText accepts printable ASCII.
func checkText(s string, max int) error {
	if len(s) > max {
		return errors.New("too long")
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("byte 0x%02x at offset %d", s[i], i)
		}
	}
	return nil
}

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newID returns a unique queue ID that sorts by arrival time: 64 bits of
// Unix microseconds (strictly increasing within the process) and 40 random
// bits, base32hex lowercase (21 characters).
func (q *Queue) newID(t time.Time) string {
	us := t.UnixMicro()
	for {
		last := q.lastID.Load()
		if us <= last {
			us = last + 1
		}
		if q.lastID.CompareAndSwap(last, us) {
			break
		}
	}
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], uint64(us))
	rand.Read(b[8:])
	return idEncoding.EncodeToString(b[:])
}

// kick wakes Run.
func (q *Queue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Status is the state of one recipient.
type Status string

// Recipient states.
const (
	Pending   Status = "pending"
	Delivered Status = "delivered"
	Failed    Status = "failed" // permanently, or expired
)

// RcptInfo is the state of one recipient, for inspection.
type RcptInfo struct {
	Rcpt     string
	Status   Status
	Attempts int
	Next     time.Time // next attempt, for Pending
	Notified bool      // Failed: the DSN was handed to the Bouncer (or none was due)
	Expired  bool      // Failed because the message expired
	Last     *Result   // the last outcome, nil before the first attempt
}

// Info describes a queued message.
type Info struct {
	ID       string
	Envelope Envelope
	Size     int64
	Rcpts    []RcptInfo
}

// Lookup returns the state of the queued message id; ok is false when it is
// not (or no longer) in the queue.
func (q *Queue) Lookup(id string) (info Info, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.msgs[id]
	if m == nil {
		return Info{}, false
	}
	return m.info(), true
}

// List returns every queued message, oldest first.
func (q *Queue) List() []Info {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]Info, 0, len(q.msgs))
	for _, m := range q.msgs {
		out = append(out, m.info())
	}
	sortInfos(out)
	return out
}

// Len returns the number of queued messages.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

// segPath returns the file name of segment n.
func (q *Queue) segPath(n uint32) string {
	return filepath.Join(q.dir, fmt.Sprintf("%08d.seg", n))
}
