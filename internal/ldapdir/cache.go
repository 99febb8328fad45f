package ldapdir

import (
	"sync"
	"time"
)

// maxCacheEntries bounds the cache. When it is full, expired entries are
// dropped; when none has expired, the whole cache is reset.
const maxCacheEntries = 100_000

// kind is what a cached answer answers.
type kind uint8

const (
	kindAccount kind = iota + 1
	kindAliases
	kindDomain
	kindSenders
	kindLogin
)

type cacheKey struct {
	kind kind
	key  string
}

type cacheEntry struct {
	value   any
	expires time.Time
}

// cache holds answers, positive and negative, for a fixed time. A nil
// *cache caches nothing. Safe for concurrent use.
type cache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[cacheKey]cacheEntry
}

func newCache(ttl time.Duration) *cache {
	if ttl <= 0 {
		return nil
	}
	return &cache{ttl: ttl, max: maxCacheEntries, now: time.Now, m: make(map[cacheKey]cacheEntry)}
}

func (c *cache) get(k cacheKey) (any, bool) {
	if c == nil {
		return nil, false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	if !now.Before(e.expires) {
		delete(c.m, k)
		return nil, false
	}
	return e.value, true
}

func (c *cache) put(k cacheKey, v any) {
	if c == nil {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[k] = cacheEntry{value: v, expires: now.Add(c.ttl)}
}

// len returns the number of entries held (expired ones included).
func (c *cache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// flush drops every entry.
func (c *cache) flush() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}
