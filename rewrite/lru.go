package rewrite

import (
	"container/list"
	"sync"
)

// cacheKey identifies a rewrite result: the statement text and, for
// RewriteWithParamTypes, the declared parameter types encoded as a string
// ("" when none is declared).
type cacheKey struct {
	sql   string
	types string
}

// cacheEntry is one cached rewrite result. Plan and err are immutable.
type cacheEntry struct {
	key  cacheKey
	plan *Plan
	err  error
}

// lru is a fixed-size least-recently-used cache of rewrite results, safe
// for concurrent use. A hit costs one map lookup and one list move under a
// mutex, and allocates nothing.
type lru struct {
	mu    sync.Mutex
	size  int
	ll    *list.List // front = most recently used; values are *cacheEntry
	items map[cacheKey]*list.Element
}

func newLRU(size int) *lru {
	return &lru{size: size, ll: list.New(), items: make(map[cacheKey]*list.Element, size)}
}

func (c *lru) get(k cacheKey) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*cacheEntry), true
}

func (c *lru) add(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		// Another goroutine rewrote the same text meanwhile: keep one.
		c.ll.MoveToFront(el)
		return
	}
	c.items[e.key] = c.ll.PushFront(e)
	for c.ll.Len() > c.size {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

func (c *lru) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
