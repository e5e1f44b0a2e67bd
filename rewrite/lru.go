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
	plan *Plan
	err  error
}

// lru is a fixed-size least-recently-used cache, safe for concurrent use:
// plans by text, and shapes by shape key. A hit costs one map lookup and
// one list move under a mutex, and allocates nothing.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	size  int
	ll    *list.List // front = most recently used; values are *lruItem[K, V]
	items map[K]*list.Element
}

type lruItem[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](size int) *lru[K, V] {
	return &lru[K, V]{size: size, ll: list.New(), items: make(map[K]*list.Element, size)}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*lruItem[K, V]).val, true
}

func (c *lru[K, V]) add(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		// Another goroutine computed the same entry meanwhile: keep one.
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&lruItem[K, V]{key: k, val: v})
	for c.ll.Len() > c.size {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*lruItem[K, V]).key)
	}
}

func (c *lru[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
