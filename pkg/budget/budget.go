// Package budget bounds the memory that input in flight may hold
// together, so that many senders of large or slow input cannot run the
// process out of memory: each holder takes bytes before it buffers them
// and gives them back when done, and one that cannot take them refuses
// its input with an answer that says to resend later.
package budget

import "sync"

// Bytes is a budget of bytes. It is safe for concurrent use.
type Bytes struct {
	mu   sync.Mutex
	left int64
}

// New returns a budget of n bytes.
func New(n int64) *Bytes { return &Bytes{left: n} }

// Take takes n bytes and reports true, or reports false and takes nothing
// when fewer than n are left.
func (b *Bytes) Take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.left {
		return false
	}
	b.left -= n
	return true
}

// Give gives back n bytes taken before.
func (b *Bytes) Give(n int64) {
	b.mu.Lock()
	b.left += n
	b.mu.Unlock()
}

// Left returns the bytes not taken.
func (b *Bytes) Left() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.left
}
