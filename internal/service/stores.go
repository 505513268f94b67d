package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// Stores are shared by the dane blocks of one process that use the same
// directory (one per target.remote, say): a store directory must have a
// single owner. Each user holds a reference; the release function drops
// it.

var (
	stsStoresMu sync.Mutex
	stsStores   = map[string]*sharedSTS{}
)

type sharedSTS struct {
	store *policycache.Store
	refs  int
}

// sharedSTSStore opens (or shares) the MTA-STS policy store in dir and
// prunes its expired entries.
func sharedSTSStore(dir string, l Logger) (*policycache.Store, func(), error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	stsStoresMu.Lock()
	defer stsStoresMu.Unlock()
	e := stsStores[abs]
	if e == nil {
		st, err := policycache.OpenStore(abs, policycache.StoreOptions{
			OnCorrupt: func(key string, err error) {
				l.Msg("MTA-STS policy store: damaged entry removed", "key", key, "reason", err.Error())
			},
		})
		if err != nil {
			return nil, nil, err
		}
		if n, err := st.Prune(); err != nil {
			l.Error("MTA-STS policy store: pruning failed", err, "mtasts_dir", abs)
		} else if n > 0 {
			l.DebugMsg("MTA-STS policy store: expired entries removed", "count", n)
		}
		e = &sharedSTS{store: st}
		stsStores[abs] = e
	}
	e.refs++
	var once sync.Once
	return e.store, func() {
		once.Do(func() {
			stsStoresMu.Lock()
			defer stsStoresMu.Unlock()
			if e.refs--; e.refs == 0 {
				delete(stsStores, abs)
			}
		})
	}, nil
}

// TLS report stores stay open for the life of the process (tlsrpt.Store
// has no Close; bbolt's file lock would make a second open of the same
// file wait).
var (
	rptStoresMu sync.Mutex
	rptStores   = map[string]*tlsrpt.Store{}
)

// sharedReportStore opens (or shares) the TLS report store in dir.
func sharedReportStore(dir string, l Logger) (*tlsrpt.Store, error) {
	path := TLSRPTStorePath(dir)
	rptStoresMu.Lock()
	defer rptStoresMu.Unlock()
	if st, ok := rptStores[path]; ok {
		return st, nil
	}
	st, err := tlsrpt.OpenStore(path, tlsrpt.StoreOptions{OnCorrupt: func(moved string, err error) {
		tlsrptStoreErrors.Inc()
		l.Error("tlsrpt store was corrupt: moved aside, starting an empty one", err, "moved_to", moved)
	}})
	if err != nil {
		return nil, err
	}
	rptStores[path] = st
	return st, nil
}

// A store has one sender: that of the first started service using it.
// When that service stops while others still use the store, the next one
// in start order takes over, after the old sender has returned. This is
// what keeps reports going out across a configuration reload, where the
// new server starts before the old one stops (maddy 0.9), and sends them
// through the new server's delivery target.
var (
	sendersMu sync.Mutex
	senders   = map[string][]*reporter{}
)

func claimSender(r *reporter) {
	sendersMu.Lock()
	defer sendersMu.Unlock()
	senders[r.path] = append(senders[r.path], r)
	if len(senders[r.path]) == 1 {
		r.runSender()
	}
}

func releaseSender(r *reporter) {
	sendersMu.Lock()
	defer sendersMu.Unlock()
	l := senders[r.path]
	i := slices.Index(l, r)
	if i < 0 {
		return
	}
	if r.stop != nil {
		r.stop() // waits for Run to return
		r.stop = nil
	}
	if l = slices.Delete(l, i, i+1); len(l) == 0 {
		delete(senders, r.path)
		return
	}
	senders[r.path] = l
	if i == 0 {
		l[0].runSender()
	}
}

// runSender starts r's sender. The first tick waits one poll interval:
// the delivery target may be started after the policy.
func (r *reporter) runSender() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.PollInterval):
		}
		r.sender.Run(ctx)
	}()
	r.stop = func() { cancel(); <-done }
}

// checkStoreDir reports what would stop the server from using dir as its
// store directory, without creating it: a file in its place, or a
// directory that cannot be read.
func checkStoreDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // created at the server's first start
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	_, err = os.ReadDir(dir)
	return err
}
