package patient

import "sync"

// maxRecent bounds how many records an Index remembers (about 1 KiB
// each); the memory is dropped all at once when full.
const maxRecent = 2048

// recentRecords remembers the stored form of the records an Index read
// or wrote last, so that an update can start from one without reading
// it: a KV read through the embedded server costs about 100 us of CPU,
// a large part of applying one message (BENCHMARKS.md).
//
// A remembered record may be stale: another process, or a write this
// one did not see, may have changed it since. It is therefore used only
// where staleness cannot matter: as the start of a compare-and-set
// write, which succeeds only when the record still has the remembered
// revision (and so the remembered content), and is dropped when the
// write conflicts. A decision not to write, and every read a caller
// sees, still comes from the store.
type recentRecords struct {
	mu sync.Mutex
	m  map[string]storedRecord
}

// storedRecord is a record as the bucket holds it: its JSON and
// revision.
type storedRecord struct {
	val []byte
	rev uint64
}

// get returns the remembered form of the record at key.
func (c *recentRecords) get(key string) (storedRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[key]
	return s, ok
}

// remember records that the record at key had value val at revision
// rev. val must not be changed afterwards.
func (c *recentRecords) remember(key string, val []byte, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.m[key]; ok && s.rev > rev {
		return // an older read finishing after a newer write
	}
	if c.m == nil || len(c.m) >= maxRecent {
		c.m = make(map[string]storedRecord, maxRecent)
	}
	c.m[key] = storedRecord{val: val, rev: rev}
}

// forget drops the record at key.
func (c *recentRecords) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}
