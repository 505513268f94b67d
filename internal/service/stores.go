package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

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
// file wait). The first service to open one runs its sender.
var (
	rptStoresMu sync.Mutex
	rptStores   = map[string]*tlsrpt.Store{}
)

// sharedReportStore opens (or shares) the TLS report store in dir. first
// is true for the opener, which runs the store's one sender.
func sharedReportStore(dir string, l Logger) (st *tlsrpt.Store, first bool, err error) {
	path := TLSRPTStorePath(dir)
	rptStoresMu.Lock()
	defer rptStoresMu.Unlock()
	if st, ok := rptStores[path]; ok {
		return st, false, nil
	}
	st, err = tlsrpt.OpenStore(path, tlsrpt.StoreOptions{OnCorrupt: func(moved string, err error) {
		tlsrptStoreErrors.Inc()
		l.Error("tlsrpt store was corrupt: moved aside, starting an empty one", err, "moved_to", moved)
	}})
	if err != nil {
		return nil, false, err
	}
	rptStores[path] = st
	return st, true, nil
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
