package tlsrpt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Store keeps the per-day aggregates and the delivery state of reports in
// an embedded bbolt database. Every Add is committed (fsync'd) before it
// returns, so a crash loses no acknowledged record and never counts one
// twice; concurrent Adds are committed together.
//
// The database file is opened for each operation and closed right after,
// so that a second process (the "maddy tlsrpt" command) can use it while
// maddy runs; bbolt's file lock serializes the two.
type Store struct {
	path string
	opts StoreOptions

	mu  sync.Mutex // guards cur
	cur *batch
	wmu sync.Mutex // serializes database access within the process
}

// StoreOptions configures a Store.
type StoreOptions struct {
	// LockTimeout bounds the wait for another process's lock. Default 10s.
	LockTimeout time.Duration
	// OnCorrupt is called when the database file could not be used and was
	// moved aside to movedTo; a fresh, empty database replaces it.
	OnCorrupt func(movedTo string, err error)
}

type batch struct {
	recs []stamped
	done chan struct{}
	err  error
}

type stamped struct {
	day string
	rec Record
}

// Bucket layout:
//
//	counts/<day>/<domain>/<aggKey JSON> = uint64 count
//	state/<day> "\x00" <domain>          = DeliveryState JSON
//	requests/<day>                       = time the send was requested
var (
	bucketCounts   = []byte("counts")
	bucketState    = []byte("state")
	bucketRequests = []byte("requests")
)

// aggKey identifies one aggregate: the policy plus, for failures, the
// failure-details fields. Its JSON form is the bbolt key.
type aggKey struct {
	PolicyType    PolicyType `json:"t"`
	PolicyStrings []string   `json:"s,omitempty"`
	PolicyDomain  string     `json:"d"`
	MXHost        string     `json:"m"`
	MXPatterns    []string   `json:"p,omitempty"`
	Success       bool       `json:"ok,omitempty"`
	ResultType    string     `json:"r,omitempty"`
	SendingIP     string     `json:"si,omitempty"`
	ReceivingIP   string     `json:"ri,omitempty"`
	ReceivingHELO string     `json:"rh,omitempty"`
	FailureReason string     `json:"fr,omitempty"`
}

func keyOf(r Record) aggKey {
	return aggKey{
		PolicyType: r.PolicyType, PolicyStrings: r.PolicyStrings, PolicyDomain: r.PolicyDomain,
		MXHost: r.MXHost, MXPatterns: r.MXPatterns, Success: r.Success, ResultType: r.ResultType,
		SendingIP: r.SendingIP, ReceivingIP: r.ReceivingIP, ReceivingHELO: r.ReceivingHELO,
		FailureReason: r.FailureReason,
	}
}

// OpenStore opens (creating it if needed) the store at path and checks its
// consistency. A database that cannot be read is moved aside (reported
// through OnCorrupt) and replaced by an empty one: reporting must never
// stop mail.
func OpenStore(path string, opts StoreOptions) (*Store, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 10 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	s := &Store{path: path, opts: opts}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.withDBLocked(false, func(db *bolt.DB) error {
		return checkDB(db)
	})
	if err != nil && isCorruption(err) {
		if err := s.moveAside(err); err != nil {
			return nil, err
		}
		err = s.withDBLocked(false, func(db *bolt.DB) error { return nil })
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// corruptError marks errors that mean the file's content is unusable.
type corruptError struct{ err error }

func (e corruptError) Error() string { return "tlsrpt store corrupt: " + e.err.Error() }
func (e corruptError) Unwrap() error { return e.err }

func isCorruption(err error) bool {
	var ce corruptError
	return errors.As(err, &ce) || errors.Is(err, bolterrors.ErrInvalid) ||
		errors.Is(err, bolterrors.ErrChecksum) || errors.Is(err, bolterrors.ErrVersionMismatch) ||
		errors.Is(err, bolterrors.ErrInvalidMapping)
}

// checkDB runs bbolt's consistency check and decodes every value.
func checkDB(db *bolt.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corruptError{fmt.Errorf("panic while checking: %v", r)}
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			return corruptError{e}
		}
		if b := tx.Bucket(bucketState); b != nil {
			if err := b.ForEach(func(k, v []byte) error {
				var st DeliveryState
				if err := json.Unmarshal(v, &st); err != nil {
					return corruptError{fmt.Errorf("state %q: %v", k, err)}
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Store) moveAside(cause error) error {
	moved := fmt.Sprintf("%s.corrupt-%d", s.path, time.Now().UnixNano())
	if err := os.Rename(s.path, moved); err != nil {
		return fmt.Errorf("tlsrpt: moving the corrupt store aside: %w (cause: %v)", err, cause)
	}
	if s.opts.OnCorrupt != nil {
		s.opts.OnCorrupt(moved, cause)
	}
	return nil
}

// withDB opens the database, runs fn and closes it. A corrupt database
// found here (it was fine at OpenStore) is moved aside too.
func (s *Store) withDB(readOnly bool, fn func(db *bolt.DB) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.withDBLocked(readOnly, fn)
	if err != nil && isCorruption(err) {
		if merr := s.moveAside(err); merr != nil {
			return merr
		}
		return s.withDBLocked(readOnly, fn)
	}
	return err
}

func (s *Store) withDBLocked(readOnly bool, fn func(db *bolt.DB) error) (err error) {
	if readOnly {
		if _, err := os.Stat(s.path); errors.Is(err, os.ErrNotExist) {
			readOnly = false // create it
		}
	}
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: s.opts.LockTimeout, ReadOnly: readOnly})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return fmt.Errorf("tlsrpt: store %s is locked by another process: %w", s.path, err)
		}
		if isCorruption(err) {
			return corruptError{err}
		}
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = corruptError{fmt.Errorf("panic: %v", r)}
		}
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	return fn(db)
}

// Add records one session outcome at time t (its UTC day). It returns once
// the record is on disk.
func (s *Store) Add(t time.Time, r Record) error {
	r, err := r.normalize()
	if err != nil {
		return err
	}
	if k, err := json.Marshal(keyOf(r)); err != nil {
		return err
	} else if len(k) > maxKeyLen {
		return fmt.Errorf("tlsrpt: record too large to store (%d bytes of policy and session data)", len(k))
	}
	s.mu.Lock()
	b := s.cur
	leader := b == nil
	if leader {
		b = &batch{done: make(chan struct{})}
		s.cur = b
	}
	b.recs = append(b.recs, stamped{Day(t), r})
	s.mu.Unlock()
	if !leader {
		<-b.done
		return b.err
	}
	// Group commit: everything added while the leader waits for the
	// database goes into the same transaction.
	s.wmu.Lock()
	s.mu.Lock()
	s.cur = nil
	recs := b.recs
	s.mu.Unlock()
	s.wmu.Unlock()
	b.err = s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error { return addAll(tx, recs) })
	})
	close(b.done)
	return b.err
}

func addAll(tx *bolt.Tx, recs []stamped) error {
	counts, err := tx.CreateBucketIfNotExists(bucketCounts)
	if err != nil {
		return err
	}
	for _, sr := range recs {
		db, err := counts.CreateBucketIfNotExists([]byte(sr.day))
		if err != nil {
			return err
		}
		dom, err := db.CreateBucketIfNotExists([]byte(sr.rec.Domain))
		if err != nil {
			return err
		}
		k, err := json.Marshal(keyOf(sr.rec))
		if err != nil {
			return err
		}
		var n uint64
		if v := dom.Get(k); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], n+1)
		if err := dom.Put(k, buf[:]); err != nil {
			return err
		}
	}
	return nil
}

// Aggregate is one aggregate of a day and domain.
type Aggregate struct {
	Key   aggKey
	Count uint64
}

// Aggregates returns the aggregates recorded for domain on day, in key
// order.
func (s *Store) Aggregates(day, domain string) ([]Aggregate, error) {
	var out []Aggregate
	err := s.withDB(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			b := nested(tx, bucketCounts, []byte(day), []byte(normDomain(domain)))
			if b == nil {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				var a Aggregate
				if err := json.Unmarshal(k, &a.Key); err != nil {
					return corruptError{err}
				}
				if len(v) != 8 {
					return corruptError{fmt.Errorf("count of %q has %d bytes", k, len(v))}
				}
				a.Count = binary.BigEndian.Uint64(v)
				out = append(out, a)
				return nil
			})
		})
	})
	return out, err
}

func nested(tx *bolt.Tx, names ...[]byte) *bolt.Bucket {
	b := tx.Bucket(names[0])
	for _, n := range names[1:] {
		if b == nil {
			return nil
		}
		b = b.Bucket(n)
	}
	return b
}

// DeliveryState is what the store knows about the report of one day and
// domain.
type DeliveryState struct {
	ReportID     string    `json:"report_id,omitempty"`
	Attempts     int       `json:"attempts,omitempty"`
	FirstAttempt time.Time `json:"first_attempt,omitzero"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	// Done is set when nothing more will be attempted; Outcome says why:
	// "sent", "no-policy" (the domain asks for no reports), "failed" (gave
	// up), "expired" (too old to send).
	Done    bool      `json:"done,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
	DoneAt  time.Time `json:"done_at,omitzero"`
	// SentTo lists the URIs that accepted the report.
	SentTo []string `json:"sent_to,omitempty"`

	// Early* describe the last report sent on request before the day
	// ended (see Sender.sendEarly). It covers the day so far; it leaves
	// the fields above alone, so the complete report still goes out.
	EarlyAt      time.Time `json:"early_at,omitzero"`
	EarlyOutcome string    `json:"early_outcome,omitempty"` // "sent" or "failed"
	EarlyError   string    `json:"early_error,omitempty"`
	EarlySentTo  []string  `json:"early_sent_to,omitempty"`
}

// Pending summarizes the records of one day and domain.
type Pending struct {
	Day        string        `json:"day"`
	Domain     string        `json:"domain"`
	Successes  uint64        `json:"successes"`
	Failures   uint64        `json:"failures"`
	State      DeliveryState `json:"state"`
	Requested  bool          `json:"send_requested,omitempty"`
	Aggregates int           `json:"aggregates"`
}

// List returns every day and domain in the store, oldest day first.
func (s *Store) List() ([]Pending, error) {
	var out []Pending
	err := s.withDB(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			counts := tx.Bucket(bucketCounts)
			if counts == nil {
				return nil
			}
			states := tx.Bucket(bucketState)
			reqs := tx.Bucket(bucketRequests)
			return counts.ForEachBucket(func(day []byte) error {
				dayB := counts.Bucket(day)
				return dayB.ForEachBucket(func(dom []byte) error {
					p := Pending{Day: string(day), Domain: string(dom)}
					err := dayB.Bucket(dom).ForEach(func(k, v []byte) error {
						var key aggKey
						if err := json.Unmarshal(k, &key); err != nil || len(v) != 8 {
							return corruptError{fmt.Errorf("aggregate %q", k)}
						}
						p.Aggregates++
						if key.Success {
							p.Successes += binary.BigEndian.Uint64(v)
						} else {
							p.Failures += binary.BigEndian.Uint64(v)
						}
						return nil
					})
					if err != nil {
						return err
					}
					if states != nil {
						if v := states.Get(stateKey(p.Day, p.Domain)); v != nil {
							if err := json.Unmarshal(v, &p.State); err != nil {
								return corruptError{err}
							}
						}
					}
					if reqs != nil && reqs.Get(day) != nil {
						p.Requested = true
					}
					out = append(out, p)
					return nil
				})
			})
		})
	})
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Day != out[j].Day {
			return out[i].Day < out[j].Day
		}
		return out[i].Domain < out[j].Domain
	})
	return out, err
}

func stateKey(day, domain string) []byte {
	return []byte(day + "\x00" + normDomain(domain))
}

// State returns the delivery state of the report for day and domain.
func (s *Store) State(day, domain string) (DeliveryState, error) {
	var st DeliveryState
	err := s.withDB(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketState)
			if b == nil {
				return nil
			}
			if v := b.Get(stateKey(day, domain)); v != nil {
				return json.Unmarshal(v, &st)
			}
			return nil
		})
	})
	return st, err
}

// SetState stores the delivery state of the report for day and domain.
func (s *Store) SetState(day, domain string, st DeliveryState) error {
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketState)
			if err != nil {
				return err
			}
			return b.Put(stateKey(day, domain), v)
		})
	})
}

// RequestSend asks the running Sender to send the reports of day now,
// before their time (and again, for reports already sent).
func (s *Store) RequestSend(day string, at time.Time) error {
	if _, err := ParseDay(day); err != nil {
		return err
	}
	return s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketRequests)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(day), []byte(at.UTC().Format(time.RFC3339Nano))); err != nil {
				return err
			}
			// A request re-opens reports already done.
			st := tx.Bucket(bucketState)
			if st == nil {
				return nil
			}
			c := st.Cursor()
			prefix := []byte(day + "\x00")
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				var ds DeliveryState
				if err := json.Unmarshal(v, &ds); err != nil {
					return corruptError{err}
				}
				ds.Done, ds.Outcome, ds.NextAttempt, ds.Attempts, ds.FirstAttempt = false, "", time.Time{}, 0, time.Time{}
				nv, _ := json.Marshal(ds)
				if err := st.Put(k, nv); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// takeRequests returns and clears the pending send requests.
func (s *Store) takeRequests() (map[string]bool, error) {
	out := map[string]bool{}
	// Look first, so that the common case (no request) writes nothing.
	pending := false
	if err := s.withDB(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			pending = tx.Bucket(bucketRequests) != nil
			return nil
		})
	}); err != nil || !pending {
		return out, err
	}
	err := s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketRequests)
			if b == nil {
				return nil
			}
			if err := b.ForEach(func(k, _ []byte) error {
				out[string(k)] = true
				return nil
			}); err != nil {
				return err
			}
			return tx.DeleteBucket(bucketRequests)
		})
	})
	return out, err
}

// Prune deletes the records and states of days before the given day.
func (s *Store) Prune(before string) error {
	return s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			if counts := tx.Bucket(bucketCounts); counts != nil {
				var old [][]byte
				_ = counts.ForEachBucket(func(day []byte) error {
					if string(day) < before {
						old = append(old, append([]byte(nil), day...))
					}
					return nil
				})
				for _, d := range old {
					if err := counts.DeleteBucket(d); err != nil {
						return err
					}
				}
			}
			if st := tx.Bucket(bucketState); st != nil {
				var old [][]byte
				_ = st.ForEach(func(k, _ []byte) error {
					day, _, _ := strings.Cut(string(k), "\x00")
					if day < before {
						old = append(old, append([]byte(nil), k...))
					}
					return nil
				})
				for _, k := range old {
					if err := st.Delete(k); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
}
