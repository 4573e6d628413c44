// Package jstest runs an embedded JetStream server for tests, the way
// nats-server's own tests run theirs in process.
package jstest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start runs an embedded JetStream server named name on a random loopback
// port, with its store in a directory of the test's own, and returns a
// JetStream handle on it. The server stops when the test ends.
func Start(tb testing.TB, name string) jetstream.JetStream {
	tb.Helper()
	srv := run(tb, name, tb.TempDir())
	tb.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return Connect(tb, srv.ClientURL())
}

// run starts an embedded JetStream server named name on a random loopback
// port with its store in dir, and waits until it takes connections.
func run(tb testing.TB, name, dir string) *server.Server {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{
		ServerName: name, Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		tb.Fatalf("configuring test server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		tb.Fatal("test server did not become ready")
	}
	return srv
}

// StartIn runs an embedded JetStream server named name on a random
// loopback port with its store in dir, and returns a JetStream handle on it
// and a function that closes the handle and stops the server (called
// again when the test ends, harmlessly). A test can then start another
// server on dir, as a restart or an upgrade of the engine does.
func StartIn(tb testing.TB, name, dir string) (jetstream.JetStream, func()) {
	tb.Helper()
	srv := run(tb, name, dir)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		srv.Shutdown()
		tb.Fatalf("connecting to test server: %v", err)
	}
	stop := func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	tb.Cleanup(stop)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("opening JetStream: %v", err)
	}
	return js, stop
}

// Connect returns a JetStream handle on the server (or cluster: URLs
// separated by commas) at url, on a connection of its own closed when the
// test ends.
func Connect(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatalf("connecting to test server: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("opening JetStream: %v", err)
	}
	return js
}

// DamagedStream makes stream cfg on a server of the test's own, lets
// fill write to it, stops the server, cuts the stream's first block file
// to half its length (CutInHalf), and starts the server again on the
// same store, returning a JetStream handle on it. The stream is given S2
// compression, as Junction's audit stream has, so that the damaged block
// cannot be read at all: the server counts its messages but cannot
// produce them. See DamagedStreamWith for fill's bounds.
func DamagedStream(tb testing.TB, cfg jetstream.StreamConfig, fill func(jetstream.JetStream)) jetstream.JetStream {
	tb.Helper()
	cfg.Compression = jetstream.S2Compression
	return DamagedStreamWith(tb, cfg, CutInHalf, fill)
}

// Damage does to a stream's block file, of size bytes, what a torn copy
// or a failing disk does.
type Damage func(path string, size int64) error

// CutInHalf cuts a block file to half its length.
func CutInHalf(path string, size int64) error { return os.Truncate(path, size/2) }

// ZeroFill overwrites a whole block file with zeros.
func ZeroFill(path string, size int64) error { return os.WriteFile(path, make([]byte, size), 0o600) }

// OverwriteMiddle overwrites 1,000 bytes from just past the middle of a
// block file with zeros, as a failing disk may: the record there (one
// larger than that, not cut at the middle, when records are of one size)
// no longer matches its checksum.
func OverwriteMiddle(path string, size int64) error { return overwrite(path, size/2+64) }

// OverwriteEnd overwrites 1,000 bytes from 1,500 bytes before the end of
// a block file with zeros: the block's last record, when it is larger
// than that, no longer matches its checksum.
func OverwriteEnd(path string, size int64) error { return overwrite(path, size-1500) }

// overwrite writes 1,000 zero bytes into file path at offset off.
func overwrite(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(make([]byte, 1000), off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// DamagedLastBlock makes stream cfg on a server of the test's own, lets
// fill write to it, stops the server, does damage to the stream's last
// block file, and starts the server again on the same store, returning
// a JetStream handle on it. The server does not check a last block at
// start as it rebuilds a damaged block before it: a record overwritten
// in the middle of an uncompressed last block (OverwriteMiddle, fill
// writing records larger than the damage) stays counted, and readers
// pass over it without a word.
func DamagedLastBlock(tb testing.TB, cfg jetstream.StreamConfig, damage Damage, fill func(jetstream.JetStream)) jetstream.JetStream {
	tb.Helper()
	dir := tb.TempDir()
	js, stop := StartIn(tb, "damaged", dir)
	cfg.Storage = jetstream.FileStorage
	if _, err := js.CreateStream(tb.Context(), cfg); err != nil {
		tb.Fatalf("creating stream: %v", err)
	}
	fill(js)
	stop()
	msgs := filepath.Join(dir, "jetstream", "$G", "streams", cfg.Name, "msgs")
	blocks, err := filepath.Glob(filepath.Join(msgs, "*.blk"))
	if err != nil || len(blocks) == 0 {
		tb.Fatalf("the stream's block files: %v %v", blocks, err)
	}
	last, lastN := "", -1
	for _, b := range blocks {
		if n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(b), ".blk")); err == nil && n > lastN {
			last, lastN = b, n
		}
	}
	fi, err := os.Stat(last)
	if err != nil {
		tb.Fatal(err)
	}
	if err := damage(last, fi.Size()); err != nil {
		tb.Fatalf("damaging block %d: %v", lastN, err)
	}
	js, _ = StartIn(tb, "damaged", dir)
	return js
}

// DamagedStreamWith is DamagedStream with the damage given and cfg's
// compression as it is. The stream is given a small size limit while
// fill writes, so that the server cuts it into small blocks and those
// after the first stay whole (fill must write more than one block,
// about 32 KiB, and less than the limit, 120,000 bytes). An uncompressed
// block damaged so is rebuilt by the server at start: the messages it
// cannot read become deleted sequences.
func DamagedStreamWith(tb testing.TB, cfg jetstream.StreamConfig, damage Damage, fill func(jetstream.JetStream)) jetstream.JetStream {
	tb.Helper()
	return DamagedBlocks(tb, cfg, damage, fill, 1)
}

// DamagedBlocks is DamagedStreamWith damaging each of the block files
// numbered blocks (1 is the first) rather than the first alone: damage
// to blocks 1 and 3 of a stream fill wrote four blocks of leaves two
// runs of messages the server cannot produce, with readable ones
// between and after them. fill must write past the last block damaged.
func DamagedBlocks(tb testing.TB, cfg jetstream.StreamConfig, damage Damage, fill func(jetstream.JetStream), blocks ...int) jetstream.JetStream {
	tb.Helper()
	dir := tb.TempDir()
	js, stop := StartIn(tb, "damaged", dir)
	cfg.Storage, cfg.MaxBytes = jetstream.FileStorage, 120_000
	if _, err := js.CreateStream(tb.Context(), cfg); err != nil {
		tb.Fatalf("creating stream: %v", err)
	}
	fill(js)
	st, err := js.Stream(tb.Context(), cfg.Name)
	if err != nil {
		tb.Fatal(err)
	}
	if state := st.CachedInfo().State; state.FirstSeq > 1 {
		// The limit removed the first messages: a reader would take them
		// as lost to the damage.
		tb.Fatalf("fill wrote more than the size limit: the stream starts at %d before the damage", state.FirstSeq)
	}
	// The limit only sizes the blocks: lifted, it leaves those written
	// small, and the stream keeps everything as cfg asked (readers take
	// a first message after 1 on a stream with limits as expired, not
	// damaged).
	cfg.MaxBytes = -1
	if _, err := js.UpdateStream(tb.Context(), cfg); err != nil {
		tb.Fatalf("lifting the stream's size limit: %v", err)
	}
	stop()
	msgs := filepath.Join(dir, "jetstream", "$G", "streams", cfg.Name, "msgs")
	for _, b := range blocks {
		if _, err := os.Stat(filepath.Join(msgs, strconv.Itoa(b+1)+".blk")); err != nil {
			tb.Fatalf("the stream has no block after block %d, none left whole after damaging it: %v", b, err)
		}
		path := filepath.Join(msgs, strconv.Itoa(b)+".blk")
		fi, err := os.Stat(path)
		if err != nil {
			tb.Fatal(err)
		}
		if err := damage(path, fi.Size()); err != nil {
			tb.Fatalf("damaging block %d: %v", b, err)
		}
	}
	js, _ = StartIn(tb, "damaged", dir)
	return js
}

// StaleReplica is a stream whose leader's state is one server's copy
// (Stream: info and message gets) and whose first StaleReaders ordered
// consumers are placed on another, older copy of the same stream (Stale:
// the same messages at the same sequences, fewer of them), as
// nats-server may place a reader on a replica behind its leader or
// damaged by a kill: such a reader reads that replica and says nothing
// more is pending.
type StaleReplica struct {
	jetstream.Stream
	Stale        jetstream.Stream
	StaleReaders int
	readers      int
}

// OrderedConsumer places the first StaleReaders readers on Stale, and
// the others on the leader's copy.
func (r *StaleReplica) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	r.readers++
	if r.readers <= r.StaleReaders {
		return r.Stale.OrderedConsumer(ctx, cfg)
	}
	return r.Stream.OrderedConsumer(ctx, cfg)
}

// DeleteConsumer deletes the consumer from whichever copy holds it.
func (r *StaleReplica) DeleteConsumer(ctx context.Context, name string) error {
	if err := r.Stale.DeleteConsumer(ctx, name); err == nil {
		return nil
	}
	return r.Stream.DeleteConsumer(ctx, name)
}

// FetchCounter is a stream whose readers' fetches (FetchNoWait) are
// counted in Fetches; the first Slow of them come back empty, as from a
// slow store. Highest is the highest stream sequence of the messages
// fetched.
type FetchCounter struct {
	jetstream.Stream
	Fetches atomic.Int64
	Slow    int64
	Highest atomic.Uint64
}

// OrderedConsumer makes a reader on the stream whose fetches are counted.
func (s *FetchCounter) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.Stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return countedConsumer{c, s}, nil
}

type countedConsumer struct {
	jetstream.Consumer
	s *FetchCounter
}

func (c countedConsumer) FetchNoWait(n int) (jetstream.MessageBatch, error) {
	if c.s.Fetches.Add(1) <= c.s.Slow {
		return emptyBatch{}, nil
	}
	b, err := c.Consumer.FetchNoWait(n)
	if err != nil {
		return b, err
	}
	return countedBatch{b, c.s}, nil
}

// countedBatch is a fetched batch whose messages' stream sequences raise
// FetchCounter.Highest as they are read.
type countedBatch struct {
	jetstream.MessageBatch
	s *FetchCounter
}

func (b countedBatch) Messages() <-chan jetstream.Msg {
	out := make(chan jetstream.Msg)
	go func() {
		defer close(out)
		for m := range b.MessageBatch.Messages() {
			if md, err := m.Metadata(); err == nil {
				for h := b.s.Highest.Load(); md.Sequence.Stream > h && !b.s.Highest.CompareAndSwap(h, md.Sequence.Stream); h = b.s.Highest.Load() {
				}
			}
			out <- m
		}
	}()
	return out
}

// emptyBatch is a fetched batch of no messages.
type emptyBatch struct{}

func (emptyBatch) Messages() <-chan jetstream.Msg {
	ch := make(chan jetstream.Msg)
	close(ch)
	return ch
}

func (emptyBatch) Error() error { return jetstream.ErrNoMessages }

// StreamWithGaps makes stream cfg on a server of the test's own, writes
// n messages to subject, and deletes those at the sequences dropped, as
// the server leaves what it dropped of a damaged block it rebuilt at
// start (deleted sequences). It returns a JetStream handle on it.
func StreamWithGaps(tb testing.TB, cfg jetstream.StreamConfig, subject string, n int, dropped []uint64) jetstream.JetStream {
	tb.Helper()
	js := Start(tb, "gaps")
	st, err := js.CreateStream(tb.Context(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(tb.Context(), subject, []byte("message "+strconv.Itoa(i))); err != nil {
			tb.Fatal(err)
		}
	}
	for _, seq := range dropped {
		if err := st.DeleteMsg(tb.Context(), seq); err != nil {
			tb.Fatal(err)
		}
	}
	return js
}

// Seqs returns the sequences from first to last, step apart.
func Seqs(first, last, step uint64) []uint64 {
	var out []uint64
	for seq := first; seq <= last; seq += step {
		out = append(out, seq)
	}
	return out
}
