package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// message is a queued message in memory.
type message struct {
	id    string
	env   Envelope
	size  int64
	seg   uint32 // segment holding the current copy
	off   int64  // offset of the body in it
	rcpts []rcptState

	busy        bool      // in a delivery or being compacted; then not in the heap
	heapIdx     int       // index in Queue.due, -1 when not there
	due         time.Time // heap key
	hold        time.Time // no work before (after a failed log write)
	bounceNext  time.Time // next try of a Bouncer that failed
	bounceTries int
}

// rcptState is the state of one recipient.
type rcptState struct {
	status   Status
	attempts int
	next     time.Time // next attempt, for Pending
	at       time.Time // last attempt
	notified bool      // Failed: DSN handed over, or none due
	expired  bool
	last     *Result
}

func (m *message) finished() bool {
	for _, r := range m.rcpts {
		if r.status == Pending || r.status == Failed && !r.notified {
			return false
		}
	}
	return true
}

// dueTime is when m next needs a worker: its earliest pending recipient, or
// now for an owed DSN.
func (m *message) dueTime() time.Time {
	var due time.Time
	has := false
	for _, r := range m.rcpts {
		switch {
		case r.status == Pending && (!has || r.next.Before(due)):
			due, has = r.next, true
		case r.status == Failed && !r.notified && (!has || m.bounceNext.Before(due)):
			due, has = m.bounceNext, true
		}
	}
	if m.hold.After(due) {
		due = m.hold
	}
	return due
}

func (m *message) info() Info {
	inf := Info{ID: m.id, Envelope: m.env, Size: m.size, Rcpts: make([]RcptInfo, len(m.rcpts))}
	inf.Envelope.To = slices.Clone(m.env.To)
	for i, r := range m.rcpts {
		ri := RcptInfo{Rcpt: m.env.To[i], Status: r.status, Attempts: r.attempts, Notified: r.notified, Expired: r.expired}
		if r.status == Pending {
			ri.Next = r.next
		}
		if r.last != nil {
			l := *r.last
			ri.Last = &l
		}
		inf.Rcpts[i] = ri
	}
	return inf
}

func sortInfos(s []Info) {
	slices.SortFunc(s, func(a, b Info) int {
		if c := a.Envelope.Arrival.Compare(b.Envelope.Arrival); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// addLocked registers m in the index and its segment.
func (q *Queue) addLocked(m *message) {
	q.msgs[m.id] = m
	if s := q.segs[m.seg]; s != nil {
		s.msgs[m.id] = m
		s.liveBytes += m.size
	}
}

// dropLocked removes m from the index, its segment and the heap.
func (q *Queue) dropLocked(m *message) {
	if q.msgs[m.id] == m {
		delete(q.msgs, m.id)
	}
	if s := q.segs[m.seg]; s != nil && s.msgs[m.id] == m {
		delete(s.msgs, m.id)
		s.liveBytes -= m.size
	}
	q.due.remove(m)
}

// scheduleLocked puts m (not busy) back in the heap, or forgets it when it
// is finished.
func (q *Queue) scheduleLocked(m *message) {
	if m.busy {
		return
	}
	if m.finished() {
		q.dropLocked(m)
		return
	}
	m.due = m.dueTime()
	if m.heapIdx >= 0 {
		heap.Fix(&q.due, m.heapIdx)
	} else {
		heap.Push(&q.due, m)
	}
}

// msgHeap orders waiting messages by due time.
type msgHeap []*message

func (h msgHeap) Len() int           { return len(h) }
func (h msgHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h msgHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *msgHeap) Push(x any) {
	m := x.(*message)
	m.heapIdx = len(*h)
	*h = append(*h, m)
}
func (h *msgHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	m.heapIdx = -1
	return m
}
func (h *msgHeap) remove(m *message) {
	if m.heapIdx >= 0 && m.heapIdx < len(*h) && (*h)[m.heapIdx] == m {
		heap.Remove(h, m.heapIdx)
	}
}

// Run delivers queued messages as they fall due until ctx is canceled or
// the queue is closed, Options.Concurrency at a time. Deliveries in
// progress when ctx is canceled get a canceled context; Run waits for them.
func (q *Queue) Run(ctx context.Context) error {
	if q.opts.Deliverer == nil {
		return errors.New("queue: Run needs Options.Deliverer")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(q.ctx, cancel)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		q.compact()
		wait := q.dispatch(ctx, &wg)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if q.ctx.Err() != nil {
				return ErrClosed
			}
			return ctx.Err()
		case <-q.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// dispatch starts workers for due messages while there are free slots and
// returns how long to wait before the next one is due.
func (q *Queue) dispatch(ctx context.Context, wg *sync.WaitGroup) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return time.Hour
	}
	now := q.opts.Now()
	for q.running < q.opts.Concurrency && len(q.due) > 0 && !q.due[0].due.After(now) {
		m := heap.Pop(&q.due).(*message)
		m.busy = true
		q.running++
		q.workers.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer q.workers.Done()
			q.work(ctx, m)
			q.mu.Lock()
			q.running--
			m.busy = false
			q.scheduleLocked(m)
			q.mu.Unlock()
			q.kick()
		}()
	}
	if q.running >= q.opts.Concurrency || len(q.due) == 0 {
		return time.Hour // a finishing worker or Enqueue kicks
	}
	return max(q.due[0].due.Sub(now), 0)
}

// RunOnce delivers every message due now (Options.Concurrency at a time),
// waits for those deliveries and returns how many messages it worked on.
// It is Run's single step, for tests with an injected clock and for a
// "flush" command.
func (q *Queue) RunOnce(ctx context.Context) int {
	if q.opts.Deliverer == nil {
		return 0
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0
	}
	now := q.opts.Now()
	var ms []*message
	for len(q.due) > 0 && !q.due[0].due.After(now) {
		m := heap.Pop(&q.due).(*message)
		m.busy = true
		ms = append(ms, m)
	}
	q.workers.Add(len(ms))
	q.mu.Unlock()
	sem := make(chan struct{}, q.opts.Concurrency)
	var wg sync.WaitGroup
	for _, m := range ms {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done(); q.workers.Done() }()
			q.work(ctx, m)
			q.mu.Lock()
			m.busy = false
			q.scheduleLocked(m)
			q.mu.Unlock()
		}()
	}
	wg.Wait()
	q.compact()
	return len(ms)
}

type ctxKey struct{}

type ctxVal struct {
	id  string
	env Envelope
}

// EnvelopeFromContext returns the queue ID and envelope of the message
// being delivered, from the context given to Deliverer.Deliver (the SMTP
// client needs ENVID, RET, SMTPUTF8 and BODY for its MAIL FROM).
func EnvelopeFromContext(ctx context.Context) (id string, env Envelope, ok bool) {
	v, ok := ctx.Value(ctxKey{}).(ctxVal)
	return v.id, v.env, ok
}

// work makes one delivery attempt for the due recipients of m and sends the
// DSN owed, if any. m is busy: only this goroutine changes it (under q.mu,
// in the committer's apply).
func (q *Queue) work(ctx context.Context, m *message) {
	now := q.opts.Now()
	var idx []int
	var rcpts []string
	for i, r := range m.rcpts {
		if r.status == Pending && !r.next.After(now) {
			idx = append(idx, i)
			rcpts = append(rcpts, m.env.To[i])
		}
	}
	if len(idx) > 0 {
		q.attempt(ctx, m, idx, rcpts)
	}
	if ctx.Err() == nil {
		q.bounce(ctx, m)
	}
}

// outcome classifies a Result.
type outcome int

const (
	oDelivered outcome = iota
	oTemporary
	oPermanent
)

// classify: 2xx delivered; 5xx permanent unless Temporary (RFC 5321
// §4.2.1); a failure without a reply code is permanent only if its enhanced
// status is 5.x.x (RFC 3463 §3.1), e.g. a null MX (RFC 7505 §3: 5.1.10);
// everything else is temporary.
func classify(r Result) outcome {
	switch {
	case r.Code >= 200 && r.Code < 300:
		return oDelivered
	case r.Temporary:
		return oTemporary
	case r.Code >= 500 && r.Code < 600:
		return oPermanent
	case r.Code == 0 && strings.HasPrefix(r.Enhanced, "5."):
		return oPermanent
	}
	return oTemporary
}

// backoff is the delay after the n-th failed attempt: Base·2^(n-1), at most Cap.
func (q *Queue) backoff(n int) time.Duration {
	d := q.opts.BackoffBase
	for i := 1; i < n && d < q.opts.BackoffCap; i++ {
		d *= 2
	}
	return min(d, q.opts.BackoffCap)
}

func (q *Queue) callDeliverer(ctx context.Context, m *message, rcpts []string) (res []Result) {
	q.mu.Lock()
	seg := q.segs[m.seg]
	q.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			q.log.Error("delivery agent panicked", "id", m.id, "panic", fmt.Sprint(p))
			res = nil
		}
	}()
	body := io.NewSectionReader(seg.f, m.off, m.size)
	ctx = context.WithValue(ctx, ctxKey{}, ctxVal{id: m.id, env: m.env})
	return q.opts.Deliverer.Deliver(ctx, m.env.From, rcpts, body)
}

// attempt delivers to the recipients idx (addresses rcpts) and records the
// outcome durably.
func (q *Queue) attempt(ctx context.Context, m *message, idx []int, rcpts []string) {
	results := q.callDeliverer(ctx, m, rcpts)
	end := q.opts.Now()
	byRcpt := make(map[string]Result, len(results))
	for _, r := range results {
		if _, dup := byRcpt[r.Rcpt]; !dup {
			byRcpt[r.Rcpt] = r
		}
	}
	expireAt := m.env.Arrival.Add(q.opts.Expiry)
	var chIdx []int
	var chSt []rcptState
	for k, i := range idx {
		res, ok := byRcpt[rcpts[k]]
		if !ok {
			res = Result{Rcpt: rcpts[k], Temporary: true, Msg: "delivery agent returned no result"}
		}
		r := m.rcpts[i]
		out := classify(res)
		if out == oTemporary && ctx.Err() != nil {
			continue // interrupted by shutdown: not an attempt
		}
		r.at, r.last = end, &res
		r.attempts++
		status := "sent"
		switch out {
		case oDelivered:
			r.status = Delivered
		case oPermanent:
			r.status, status = Failed, "bounced"
		case oTemporary:
			if !end.Before(expireAt) {
				r.status, r.expired, status = Failed, true, "expired"
			} else {
				r.next, status = end.Add(q.backoff(r.attempts)), "deferred"
				if r.next.After(expireAt) {
					r.next = expireAt // one last try at expiry
				}
			}
		}
		if r.status == Failed && m.env.From == "" {
			// Never bounce a message from the null sender: it is itself a
			// DSN (RFC 5321 §4.5.5, §6.1; RFC 3464 §1).
			r.notified = true
			status += " (null sender: no DSN)"
		}
		q.log.Info("delivery", "id", m.id, "from", m.env.From, "rcpt", rcpts[k], "status", status,
			"attempt", r.attempts, "code", res.Code, "enhanced", res.Enhanced, "reply", res.Msg, "relay", res.RemoteMTA)
		chIdx, chSt = append(chIdx, i), append(chSt, r)
	}
	q.record(m, chIdx, chSt, end)
}

// record writes new recipient states (lazily: see commit.lazy) and applies them.
func (q *Queue) record(m *message, idx []int, st []rcptState, now time.Time) bool {
	if len(idx) == 0 {
		return true
	}
	rec, err := encodeState(m.id, idx, st)
	if err == nil {
		err = q.submit(&commit{recs: [][]byte{rec}, lazy: true, apply: func([]loc) {
			for k, i := range idx {
				m.rcpts[i] = st[k]
			}
		}})
	}
	if err != nil {
		q.log.Error("cannot record delivery state; will retry the message", "id", m.id, "err", err)
		q.mu.Lock()
		m.hold = now.Add(q.opts.BackoffBase)
		q.mu.Unlock()
		return false
	}
	return true
}

// bounce hands a DSN for the failed recipients of m not yet reported to the
// Bouncer, and marks them notified once it accepted it.
func (q *Queue) bounce(ctx context.Context, m *message) {
	var idx []int
	for i, r := range m.rcpts {
		if r.status == Failed && !r.notified {
			idx = append(idx, i)
		}
	}
	now := q.opts.Now()
	if len(idx) == 0 || m.bounceNext.After(now) {
		return
	}
	switch {
	case m.env.From == "":
		// no DSN for the null sender (see attempt)
	case q.opts.Bouncer == nil:
		q.log.Warn("no bouncer configured: failure not reported to the sender", "id", m.id, "from", m.env.From)
	default:
		dsn, err := q.buildDSN(m, idx, now)
		if err == nil {
			err = q.callBouncer(ctx, dsn)
		}
		if err != nil {
			q.mu.Lock()
			m.bounceTries++
			m.bounceNext = now.Add(q.backoff(m.bounceTries))
			q.mu.Unlock()
			q.log.Error("cannot send delivery status notification; will retry", "id", m.id, "to", m.env.From, "err", err)
			return
		}
		q.log.Info("delivery status notification sent", "id", m.id, "to", m.env.From, "recipients", len(idx))
	}
	st := make([]rcptState, len(idx))
	for k, i := range idx {
		st[k] = m.rcpts[i]
		st[k].notified = true
	}
	q.record(m, idx, st, now)
}

func (q *Queue) callBouncer(ctx context.Context, dsn *DSN) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("queue: bouncer panicked: %v", p)
		}
	}()
	return q.opts.Bouncer.Bounce(ctx, dsn)
}
