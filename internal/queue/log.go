package queue

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Log format constants (see the package comment).
const (
	segMagic  = "MGQSEG1\n"
	hdrLen    = 9       // length, CRC, type
	maxRecord = 1 << 30 // larger lengths are corruption
	maxState  = 16 << 20
	recMsg    = 'M'
	recState  = 'S'
	lockName  = "lock"
	maxBatch  = 4096     // records per group commit
	maxBatchB = 32 << 20 // bytes per group commit, unless a single record is larger
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segment is one log file.
type segment struct {
	num       uint32
	f         *os.File
	size      int64               // bytes of valid log
	msgs      map[string]*message // live messages whose current copy is here
	liveBytes int64
}

// loc is where a record was written.
type loc struct {
	seg uint32
	off int64 // offset of the record header in the segment
}

// commit is one request to the committer: records to make durable, and what
// to do under q.mu once they are.
type commit struct {
	recs  [][]byte
	apply func([]loc) // may be nil; called with q.mu held after the fsync
	// lazy: the records are written at once but need not be durable before
	// the answer; they become durable with the next fsync (the next durable
	// commit, a segment rotation, Close, or lazySyncEvery at the latest).
	// Delivery states are lazy: losing one in a crash only repeats a
	// delivery attempt (at-least-once), and it halves the fsyncs per message.
	lazy bool
	err  error
	done chan struct{}
}

// lazySyncEvery bounds how long a lazy record may stay unsynced.
const lazySyncEvery = time.Second

// submit hands c to the committer and waits until it is durable or failed.
func (q *Queue) submit(c *commit) error {
	c.done = make(chan struct{})
	select {
	case q.reqs <- c:
	case <-q.quit:
		return ErrClosed
	}
	<-c.done
	return c.err
}

// committer is the single writer of the log: it takes every request waiting,
// writes them with one write and makes them durable with one fsync (group
// commit), then answers them all.
func (q *Queue) committer() {
	defer close(q.cdon)
	tick := time.NewTicker(lazySyncEvery)
	defer tick.Stop()
	var batch []*commit
	for {
		batch = batch[:0]
		select {
		case c := <-q.reqs:
			batch = append(batch, c)
		case <-tick.C:
			q.syncLazy()
			continue
		case <-q.quit:
			q.syncLazy()
			return
		}
		n, bytes := len(batch[0].recs), recBytes(batch[0])
	drain:
		for n < maxBatch && bytes < maxBatchB {
			select {
			case c := <-q.reqs:
				batch = append(batch, c)
				n += len(c.recs)
				bytes += recBytes(c)
			default:
				break drain
			}
		}
		q.writeBatch(batch)
	}
}

func recBytes(c *commit) int {
	n := 0
	for _, r := range c.recs {
		n += len(r)
	}
	return n
}

// writeBatch appends the records of batch to the active segment, fsyncs it,
// applies the commits and answers them.
func (q *Queue) writeBatch(batch []*commit) {
	finish := func(err error) {
		for _, c := range batch {
			c.err = err
			close(c.done)
		}
	}
	if q.broken != nil {
		finish(q.broken)
		return
	}
	if q.active.size >= q.opts.SegmentSize {
		if err := q.rotate(); err != nil {
			q.log.Error("cannot start a new queue segment", "err", err)
			finish(err)
			return
		}
	}
	seg := q.active
	start := seg.size
	buf := q.buf[:0]
	locs := make([][]loc, len(batch))
	for i, c := range batch {
		locs[i] = make([]loc, len(c.recs))
		for j, r := range c.recs {
			locs[i][j] = loc{seg: seg.num, off: start + int64(len(buf))}
			buf = append(buf, r...)
		}
	}
	if cap(buf) <= 8<<20 {
		q.buf = buf[:0]
	} else {
		q.buf = nil
	}
	if _, err := seg.f.WriteAt(buf, start); err != nil {
		// Nothing of this batch was acknowledged: cut off what was written
		// (ENOSPC, EIO) so that the log stays a sequence of whole records.
		err = fmt.Errorf("queue: writing %s: %w", seg.f.Name(), err)
		if terr := seg.f.Truncate(start); terr != nil {
			q.broken = fmt.Errorf("%w: %v; truncating after it: %v", ErrBroken, err, terr)
			q.log.Error("queue log is broken", "err", q.broken)
		}
		finish(err)
		return
	}
	durable := false
	for _, c := range batch {
		if !c.lazy {
			durable = true
			break
		}
	}
	if durable {
		if err := q.sync(seg); err != nil {
			finish(err)
			return
		}
	} else {
		q.dirty = true
	}
	q.mu.Lock()
	seg.size = start + int64(len(buf))
	for i, c := range batch {
		if c.apply != nil {
			c.apply(locs[i])
		}
	}
	q.mu.Unlock()
	finish(nil)
}

// rotate starts a new active segment: the file with its magic is fsynced,
// then the directory, before any record goes into it.
func (q *Queue) rotate() error {
	n := uint32(1)
	if q.active != nil {
		n = q.active.num + 1
		if q.dirty {
			if err := q.sync(q.active); err != nil {
				return err
			}
		}
	}
	seg, err := q.createSegment(n)
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.segs[n] = seg
	q.active = seg
	q.mu.Unlock()
	q.kick() // the previous segment may now be compacted
	return nil
}

// sync makes everything written to seg durable. Only the committer calls it.
func (q *Queue) sync(seg *segment) error {
	q.syncs.Add(1)
	if err := seg.f.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages
		// and a second fsync can "succeed" without writing them (the 2018
		// "fsyncgate"): never trust this file again in this process.
		q.broken = fmt.Errorf("%w: fsync %s: %v", ErrBroken, seg.f.Name(), err)
		q.log.Error("queue log is broken", "err", q.broken)
		return q.broken
	}
	q.dirty = false
	return nil
}

// syncLazy makes lazy records durable, if there are any.
func (q *Queue) syncLazy() {
	if q.dirty && q.broken == nil && q.active != nil {
		_ = q.sync(q.active)
	}
}

func (q *Queue) createSegment(n uint32) (*segment, error) {
	path := q.segPath(n)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: creating %s: %w", path, err)
	}
	fail := func(err error) (*segment, error) {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if _, err := f.WriteString(segMagic); err != nil {
		return fail(fmt.Errorf("queue: writing %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("queue: fsync %s: %w", path, err))
	}
	if err := syncDir(q.dir); err != nil {
		return fail(err)
	}
	return &segment{num: n, f: f, size: int64(len(segMagic)), msgs: map[string]*message{}}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("queue: opening directory %s to fsync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("queue: fsync directory %s: %w", dir, err)
	}
	return nil
}

// lockDir takes the exclusive lock of the queue directory.
func lockDir(dir string) (*os.File, error) {
	path := dir + string(os.PathSeparator) + lockName
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: opening lock file: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("queue: locking %s: %w", path, err)
	}
	return f, nil
}

func (q *Queue) closeSegments() {
	for _, s := range q.segs {
		s.f.Close()
	}
}

// encodeRecord frames a payload made of parts.
func encodeRecord(typ byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, hdrLen, hdrLen+n)
	for _, p := range parts {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(n))
	b[8] = typ
	binary.BigEndian.PutUint32(b[4:8], crc32.Checksum(b[8:], castagnoli))
	return b
}

// diskMsg is the JSON metadata of an 'M' record.
type diskMsg struct {
	ID       string     `json:"id"`
	From     string     `json:"from"`
	To       []string   `json:"to"`
	Arrival  int64      `json:"arrival"`
	EnvID    string     `json:"envid,omitempty"`
	Ret      string     `json:"ret,omitempty"`
	SMTPUTF8 bool       `json:"smtputf8,omitempty"`
	BodyType string     `json:"body,omitempty"`
	Size     int64      `json:"size"`
	Rcpts    []diskRcpt `json:"rcpts,omitempty"`
}

// diskRcpt is the state of one recipient on disk.
type diskRcpt struct {
	I        int    `json:"i"`
	St       Status `json:"st"`
	N        int    `json:"n,omitempty"`
	Next     int64  `json:"next,omitempty"`
	At       int64  `json:"at,omitempty"`
	Notified bool   `json:"notified,omitempty"`
	Expired  bool   `json:"expired,omitempty"`
	Code     int    `json:"code,omitempty"`
	Enh      string `json:"enh,omitempty"`
	Msg      string `json:"msg,omitempty"`
	Remote   string `json:"remote,omitempty"`
	Temp     bool   `json:"temp,omitempty"`
	HasLast  bool   `json:"last,omitempty"`
}

// diskState is the JSON payload of an 'S' record.
type diskState struct {
	ID string     `json:"id"`
	R  []diskRcpt `json:"r"`
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func toDisk(i int, r rcptState) diskRcpt {
	d := diskRcpt{I: i, St: r.status, N: r.attempts, Next: unixNano(r.next), At: unixNano(r.at),
		Notified: r.notified, Expired: r.expired}
	if r.last != nil {
		d.HasLast = true
		d.Code, d.Enh, d.Msg, d.Remote, d.Temp = r.last.Code, r.last.Enhanced, r.last.Msg, r.last.RemoteMTA, r.last.Temporary
	}
	return d
}

func fromDisk(d diskRcpt, rcpt string) (rcptState, error) {
	switch d.St {
	case Pending, Delivered, Failed:
	default:
		return rcptState{}, fmt.Errorf("unknown recipient state %q", d.St)
	}
	r := rcptState{status: d.St, attempts: d.N, next: fromUnixNano(d.Next), at: fromUnixNano(d.At),
		notified: d.Notified, expired: d.Expired}
	if d.HasLast {
		r.last = &Result{Rcpt: rcpt, Code: d.Code, Enhanced: d.Enh, Msg: d.Msg, RemoteMTA: d.Remote, Temporary: d.Temp}
	}
	return r, nil
}

// encodeMessage returns the 'M' record of m with body data, and the offset
// of the body within the record. snapshot includes the recipient states.
func encodeMessage(m *message, data []byte, snapshot bool) (rec []byte, bodyOff int64, err error) {
	d := diskMsg{ID: m.id, From: m.env.From, To: m.env.To, Arrival: unixNano(m.env.Arrival),
		EnvID: m.env.EnvID, Ret: m.env.Ret, SMTPUTF8: m.env.SMTPUTF8, BodyType: m.env.BodyType, Size: int64(len(data))}
	if snapshot {
		for i, r := range m.rcpts {
			d.Rcpts = append(d.Rcpts, toDisk(i, r))
		}
	}
	meta, err := json.Marshal(d)
	if err != nil {
		return nil, 0, fmt.Errorf("queue: encoding envelope: %w", err)
	}
	var ml [4]byte
	binary.BigEndian.PutUint32(ml[:], uint32(len(meta)))
	return encodeRecord(recMsg, ml[:], meta, data), int64(hdrLen + 4 + len(meta)), nil
}

// encodeState returns the 'S' record for the recipients idx of m with the
// states st.
func encodeState(id string, idx []int, st []rcptState) ([]byte, error) {
	d := diskState{ID: id, R: make([]diskRcpt, len(idx))}
	for k, i := range idx {
		d.R[k] = toDisk(i, st[k])
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("queue: encoding state: %w", err)
	}
	return encodeRecord(recState, b), nil
}

// recover replays the segments (see "Recovery" in the package comment).
func (q *Queue) recover() error {
	ents, err := os.ReadDir(q.dir)
	if err != nil {
		return fmt.Errorf("queue: reading %s: %w", q.dir, err)
	}
	var nums []uint32
	for _, e := range ents {
		name := e.Name()
		if len(name) != 12 || !strings.HasSuffix(name, ".seg") {
			continue
		}
		n, err := strconv.ParseUint(name[:8], 10, 32)
		if err != nil || n == 0 {
			continue
		}
		nums = append(nums, uint32(n))
	}
	slices.Sort(nums)
	for i, n := range nums {
		if err := q.replayFile(n, i == len(nums)-1); err != nil {
			return err
		}
	}
	for _, m := range q.msgs {
		if m.finished() {
			q.dropLocked(m)
		}
	}
	// The last segment stays active unless it is full (it ends with whole
	// records: a torn tail was truncated above).
	var last uint32
	for n := range q.segs {
		last = max(last, n)
	}
	if s := q.segs[last]; s != nil && s.size < q.opts.SegmentSize {
		q.active = s
	} else {
		seg, err := q.createSegment(last + 1)
		if err != nil {
			return err
		}
		q.segs[seg.num] = seg
		q.active = seg
	}
	for _, m := range q.msgs {
		q.scheduleLocked(m)
	}
	q.deleteDeadPrefix()
	if len(q.msgs) > 0 {
		q.log.Info("queue recovered", "dir", q.dir, "messages", len(q.msgs), "segments", len(q.segs))
	}
	return nil
}

// replayFile replays segment n.
func (q *Queue) replayFile(n uint32, last bool) error {
	path := q.segPath(n)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("queue: opening %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("queue: stat %s: %w", path, err)
	}
	size := fi.Size()
	magic := make([]byte, len(segMagic))
	_, rerr := f.ReadAt(magic, 0)
	if rerr != nil || string(magic) != segMagic {
		if last && size <= int64(len(segMagic)) {
			// Created by a rotation that did not complete: nothing in it
			// was ever acknowledged.
			f.Close()
			q.log.Warn("removing incomplete queue segment", "file", path, "size", size)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("queue: removing %s: %w", path, err)
			}
			return syncDir(q.dir)
		}
		f.Close()
		return fmt.Errorf("%w: %s (bad magic)", ErrCorruptFile, path)
	}
	seg := &segment{num: n, f: f, msgs: map[string]*message{}}
	q.segs[n] = seg
	end, why := q.replay(seg, size)
	seg.size = end
	if end < size {
		if last {
			q.log.Warn("truncating unacknowledged tail of queue segment", "file", path, "offset", end, "size", size, "reason", why)
			if err := f.Truncate(end); err != nil {
				return fmt.Errorf("queue: truncating %s: %w", path, err)
			}
			if err := f.Sync(); err != nil {
				return fmt.Errorf("queue: fsync %s: %w", path, err)
			}
		} else {
			q.log.Error("queue segment damaged: ignoring its remainder", "file", path, "offset", end, "size", size, "reason", why)
			seg.size = size
		}
	}
	return nil
}

// replay reads the records of seg and applies them. It returns the offset
// after the last good record, and why reading stopped before size.
func (q *Queue) replay(seg *segment, size int64) (end int64, why string) {
	off := int64(len(segMagic))
	br := bufio.NewReaderSize(io.NewSectionReader(seg.f, off, size-off), 1<<20)
	var hdr [hdrLen]byte
	for off < size {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return off, "incomplete record header"
		}
		n := int64(binary.BigEndian.Uint32(hdr[0:4]))
		sum := binary.BigEndian.Uint32(hdr[4:8])
		typ := hdr[8]
		if n > maxRecord || off+hdrLen+n > size {
			return off, "incomplete record"
		}
		crc := crc32.Update(0, castagnoli, hdr[8:9])
		var meta []byte
		var metaLen int64
		switch typ {
		case recMsg:
			if n < 4 {
				return off, "short message record"
			}
			var ml [4]byte
			if _, err := io.ReadFull(br, ml[:]); err != nil {
				return off, "incomplete record"
			}
			metaLen = int64(binary.BigEndian.Uint32(ml[:]))
			if metaLen > n-4 || metaLen > maxState {
				return off, "bad metadata length"
			}
			meta = make([]byte, metaLen)
			if _, err := io.ReadFull(br, meta); err != nil {
				return off, "incomplete record"
			}
			crc = crc32.Update(crc, castagnoli, ml[:])
			crc = crc32.Update(crc, castagnoli, meta)
			w := &crcWriter{crc: crc}
			if _, err := io.CopyN(w, br, n-4-metaLen); err != nil {
				return off, "incomplete record"
			}
			crc = w.crc
		case recState:
			if n > maxState {
				return off, "state record too large"
			}
			meta = make([]byte, n)
			if _, err := io.ReadFull(br, meta); err != nil {
				return off, "incomplete record"
			}
			crc = crc32.Update(crc, castagnoli, meta)
		default:
			return off, fmt.Sprintf("unknown record type 0x%02x", typ)
		}
		if crc != sum {
			return off, "checksum mismatch"
		}
		if err := q.applyRecord(seg, typ, off, meta, metaLen, n); err != nil {
			q.log.Error("skipping unreadable queue record", "file", seg.f.Name(), "offset", off, "err", err)
		}
		off += hdrLen + n
	}
	return off, ""
}

// applyRecord applies one verified record during replay.
func (q *Queue) applyRecord(seg *segment, typ byte, off int64, meta []byte, metaLen, n int64) error {
	switch typ {
	case recMsg:
		var d diskMsg
		if err := json.Unmarshal(meta, &d); err != nil {
			return err
		}
		size := n - 4 - metaLen
		if d.ID == "" || len(d.To) == 0 || d.Size != size {
			return fmt.Errorf("bad message metadata (id %q, %d recipients, size %d of %d)", d.ID, len(d.To), d.Size, size)
		}
		m := &message{id: d.ID, size: size, seg: seg.num, off: off + hdrLen + 4 + metaLen, heapIdx: -1,
			env: Envelope{From: d.From, To: d.To, Arrival: fromUnixNano(d.Arrival), EnvID: d.EnvID, Ret: d.Ret,
				SMTPUTF8: d.SMTPUTF8, BodyType: d.BodyType},
			rcpts: make([]rcptState, len(d.To))}
		for i := range m.rcpts {
			m.rcpts[i] = rcptState{status: Pending, next: m.env.Arrival}
		}
		for _, r := range d.Rcpts {
			if err := m.setDisk(r); err != nil {
				return err
			}
		}
		if old := q.msgs[d.ID]; old != nil {
			q.dropLocked(old) // an older copy (compaction)
		}
		q.addLocked(m)
	case recState:
		var d diskState
		if err := json.Unmarshal(meta, &d); err != nil {
			return err
		}
		m := q.msgs[d.ID]
		if m == nil {
			return nil // finished, or its segment was compacted away
		}
		for _, r := range d.R {
			if err := m.setDisk(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *message) setDisk(r diskRcpt) error {
	if r.I < 0 || r.I >= len(m.rcpts) {
		return fmt.Errorf("message %s: recipient index %d out of range", m.id, r.I)
	}
	st, err := fromDisk(r, m.env.To[r.I])
	if err != nil {
		return fmt.Errorf("message %s: %w", m.id, err)
	}
	m.rcpts[r.I] = st
	return nil
}

// crcWriter continues a CRC-32C over what is written to it.
type crcWriter struct{ crc uint32 }

func (w *crcWriter) Write(p []byte) (int, error) {
	w.crc = crc32.Update(w.crc, castagnoli, p)
	return len(p), nil
}

// deleteDeadPrefix deletes the oldest segments while they hold no live
// message (never the active one). See "Segment deletion" in the package
// comment for why only a prefix.
func (q *Queue) deleteDeadPrefix() {
	for {
		q.mu.Lock()
		s := q.oldestLocked()
		if s == nil || s == q.active || len(s.msgs) > 0 {
			q.mu.Unlock()
			return
		}
		delete(q.segs, s.num)
		q.mu.Unlock()
		s.f.Close()
		if err := os.Remove(q.segPath(s.num)); err != nil {
			q.log.Error("cannot remove queue segment", "err", err)
			return
		}
		if err := syncDir(q.dir); err != nil {
			q.log.Error("cannot fsync queue directory", "err", err)
		}
	}
}

func (q *Queue) oldestLocked() *segment {
	var o *segment
	for _, s := range q.segs {
		if o == nil || s.num < o.num {
			o = s
		}
	}
	return o
}

// compact deletes dead segments and, when the oldest inactive segment is at
// most a quarter live, copies its live messages into the active segment so
// it can be deleted too.
func (q *Queue) compact() {
	q.deleteDeadPrefix()
	q.mu.Lock()
	s := q.oldestLocked()
	if s == nil || s == q.active || len(s.msgs) == 0 || s.liveBytes*4 > s.size || q.closed {
		q.mu.Unlock()
		return
	}
	var move []*message
	for _, m := range s.msgs {
		if !m.busy {
			m.busy = true
			q.due.remove(m)
			move = append(move, m)
		}
	}
	q.mu.Unlock()
	release := func(ms []*message) {
		q.mu.Lock()
		for _, m := range ms {
			m.busy = false
			q.scheduleLocked(m)
		}
		q.mu.Unlock()
	}
	for len(move) > 0 {
		var recs [][]byte
		var offs []int64
		var batch []*message
		total := 0
		for len(move) > 0 && (total == 0 || total+int(move[0].size) < maxBatchB) {
			m := move[0]
			move = move[1:]
			data := make([]byte, m.size)
			if _, err := s.f.ReadAt(data, m.off); err != nil {
				q.log.Error("compaction: cannot read message", "id", m.id, "err", err)
				release([]*message{m})
				continue
			}
			rec, bodyOff, err := encodeMessage(m, data, true)
			if err != nil {
				release([]*message{m})
				continue
			}
			recs, offs, batch = append(recs, rec), append(offs, bodyOff), append(batch, m)
			total += len(rec)
		}
		if len(batch) == 0 {
			continue
		}
		err := q.submit(&commit{recs: recs, apply: func(locs []loc) {
			for i, m := range batch {
				q.dropLocked(m)
				m.seg, m.off = locs[i].seg, locs[i].off+offs[i]
				q.addLocked(m)
				m.busy = false
				q.scheduleLocked(m)
			}
		}})
		if err != nil {
			q.log.Error("compaction failed", "err", err)
			release(batch)
			release(move)
			return
		}
	}
	q.deleteDeadPrefix()
}
