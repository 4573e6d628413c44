package budget

import (
	"sync"
	"testing"
)

func TestBytes(t *testing.T) {
	b := New(100)
	if !b.Take(60) || b.Take(50) || b.Left() != 40 {
		t.Fatalf("after taking 60 of 100 and failing 50: %d left, want 40", b.Left())
	}
	b.Give(60)
	if !b.Take(100) || b.Left() != 0 {
		t.Fatalf("the whole budget could not be taken back: %d left", b.Left())
	}
	b.Give(100)
	// Concurrent holders never take more than there is.
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := int64(0)
	for range 50 {
		wg.Go(func() {
			for range 1000 {
				if b.Take(7) {
					mu.Lock()
					held += 7
					if held > 100 {
						t.Errorf("%d bytes held of 100", held)
					}
					mu.Unlock()
					mu.Lock()
					held -= 7
					mu.Unlock()
					b.Give(7)
				}
			}
		})
	}
	wg.Wait()
	if b.Left() != 100 {
		t.Errorf("%d left after every holder gave back, want 100", b.Left())
	}
}
