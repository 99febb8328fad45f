package smtpclient

import (
	"sync"
	"time"
)

// pool keeps idle sessions per destination host:port. A session is either
// in use by exactly one delivery or idle in the pool; pooled, gen and
// timer of a session are guarded by pool.mu.
type pool struct {
	max         int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*session // most recently used last
	closed bool
	quits  sync.WaitGroup // QUITs of discarded sessions in progress
}

func newPool(max int, idleTimeout time.Duration) *pool {
	return &pool{max: max, idleTimeout: idleTimeout, idle: make(map[string][]*session)}
}

// get takes the most recently used idle session for key, or returns nil.
func (p *pool) get(key string) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[key]
	if len(list) == 0 {
		return nil
	}
	s := list[len(list)-1]
	list[len(list)-1] = nil
	if len(list) == 1 {
		delete(p.idle, key)
	} else {
		p.idle[key] = list[:len(list)-1]
	}
	s.pooled = false
	s.timer.Stop() // a firing expire sees pooled == false and does nothing
	s.reused = true
	return s
}

// put makes s idle, or discards it (with QUIT) when the pool for its key is
// full or closed.
func (p *pool) put(s *session) {
	p.mu.Lock()
	if p.closed {
		// Close may be waiting on p.quits already: no Add now.
		p.mu.Unlock()
		s.quit()
		return
	}
	if len(p.idle[s.key]) >= p.max {
		p.discardLocked(s)
		p.mu.Unlock()
		return
	}
	s.pooled = true
	s.gen++
	gen := s.gen
	s.timer = time.AfterFunc(p.idleTimeout, func() { p.expire(s, gen) })
	p.idle[s.key] = append(p.idle[s.key], s)
	p.mu.Unlock()
}

// expire closes s if it is still idle since the put that armed this timer.
func (p *pool) expire(s *session, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !s.pooled || s.gen != gen {
		return
	}
	p.removeLocked(s)
	p.discardLocked(s)
}

func (p *pool) removeLocked(s *session) {
	list := p.idle[s.key]
	for i, x := range list {
		if x == s {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.idle, s.key)
	} else {
		p.idle[s.key] = list
	}
	s.pooled = false
	s.timer.Stop()
}

// drop discards every idle session for key.
func (p *pool) drop(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range append([]*session(nil), p.idle[key]...) {
		p.removeLocked(s)
		p.discardLocked(s)
	}
}

// discardLocked ends s with QUIT in the background; close waits for those.
// It is not called once the pool is closed (and close has begun waiting).
func (p *pool) discardLocked(s *session) {
	p.quits.Add(1)
	go func() {
		defer p.quits.Done()
		s.quit()
	}()
}

func (p *pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// close discards every idle session and waits for all QUITs. Sessions put
// later are discarded at once.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	for key := range p.idle {
		for _, s := range append([]*session(nil), p.idle[key]...) {
			p.removeLocked(s)
			p.discardLocked(s)
		}
	}
	p.mu.Unlock()
	p.quits.Wait()
}
