package tlsrpt

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ReceivedEntry is a report received about one of the operator's domains,
// as stored.
type ReceivedEntry struct {
	Report     Report
	ReceivedAt time.Time
	// Transport is "email" or "https".
	Transport string
	// MediaType is ContentTypeGzip or ContentTypeJSON.
	MediaType string
	// DKIM is the DKIM result the caller determined (for maddy: its
	// check results, e.g. "pass", "fail", "none"), recorded as given;
	// DKIMDomain the signing domain of a pass. Empty for HTTPS.
	DKIM, DKIMDomain string
	// From is the email's From address or the HTTPS client's address.
	From     string
	Warnings []string
}

// Day is the UTC day the report's sessions belong to: the day of its
// start-datetime.
func (e *ReceivedEntry) Day() string { return Day(e.Report.DateRange.Start) }

// ReceivedReports stores received reports. ReceivedStore (bbolt) is one;
// fleet.SharedReceived (Redis, for a fleet of servers, with a
// ReceivedStore as each server's journal) is the other.
type ReceivedReports interface {
	// AddReceived stores e unless a report with the same report-id is
	// stored already; added tells which.
	AddReceived(ctx context.Context, e ReceivedEntry) (added bool, err error)
	// ReceivedSince returns the reports whose Day is since (YYYY-MM-DD)
	// or later, oldest day first, then by report-id.
	ReceivedSince(ctx context.Context, since string) ([]ReceivedEntry, error)
	// PruneReceived deletes the reports whose Day is before the given
	// day and returns how many.
	PruneReceived(ctx context.Context, before string) (int, error)
}

// ReceivedStore is the embedded store of received reports: a bbolt file of
// its own, opened per operation like Store (so "maddy tlsrpt received"
// reads it while maddy runs), with the same corruption handling.
//
// Layout:
//
//	rreports/<report-id>        = stored entry JSON
//	rdays/<day>/<report-id>     = "" (index by day, for queries and pruning)
//
// A report-id seen again is a duplicate (RFC 8460 §5.3: the id lets the
// policy domain "identify and ignore duplicate reports") as long as the
// first copy is kept; after pruning, the same id would be stored anew.
type ReceivedStore struct{ s *Store }

var _ ReceivedReports = (*ReceivedStore)(nil)

var (
	bucketRReports = []byte("rreports")
	bucketRDays    = []byte("rdays")
)

// OpenReceivedStore opens (creating it if needed) the store at path.
func OpenReceivedStore(path string, opts StoreOptions) (*ReceivedStore, error) {
	s, err := OpenStore(path, opts)
	if err != nil {
		return nil, err
	}
	return &ReceivedStore{s: s}, nil
}

// Path returns the database file's path.
func (r *ReceivedStore) Path() string { return r.s.path }

// storedEntry is the on-disk form; the report is kept as its §4.4 JSON
// and read back through ParseReport.
type storedEntry struct {
	Report     json.RawMessage `json:"report"`
	ReceivedAt time.Time       `json:"received_at"`
	Transport  string          `json:"transport,omitempty"`
	MediaType  string          `json:"media_type,omitempty"`
	DKIM       string          `json:"dkim,omitempty"`
	DKIMDomain string          `json:"dkim_domain,omitempty"`
	From       string          `json:"from,omitempty"`
	Warnings   []string        `json:"warnings,omitempty"`
}

// AddReceived implements ReceivedReports.
func (r *ReceivedStore) AddReceived(_ context.Context, e ReceivedEntry) (bool, error) {
	id := e.Report.ReportID
	if id == "" || len(id) > maxReportIDLen {
		return false, fmt.Errorf("tlsrpt: report-id empty or longer than %d bytes", maxReportIDLen)
	}
	v, err := EncodeReceived(e)
	if err != nil {
		return false, err
	}
	added := false
	err = r.s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			reps, err := tx.CreateBucketIfNotExists(bucketRReports)
			if err != nil {
				return err
			}
			if reps.Get([]byte(id)) != nil {
				return nil
			}
			days, err := tx.CreateBucketIfNotExists(bucketRDays)
			if err != nil {
				return err
			}
			day, err := days.CreateBucketIfNotExists([]byte(e.Day()))
			if err != nil {
				return err
			}
			if err := day.Put([]byte(id), nil); err != nil {
				return err
			}
			added = true
			return reps.Put([]byte(id), v)
		})
	})
	return added, err
}

// ReceivedSince implements ReceivedReports.
func (r *ReceivedStore) ReceivedSince(_ context.Context, since string) ([]ReceivedEntry, error) {
	var out []ReceivedEntry
	err := r.s.withDB(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			days, reps := tx.Bucket(bucketRDays), tx.Bucket(bucketRReports)
			if days == nil || reps == nil {
				return nil
			}
			c := days.Cursor()
			for day, _ := c.Seek([]byte(since)); day != nil; day, _ = c.Next() {
				b := days.Bucket(day)
				if b == nil {
					continue
				}
				if err := b.ForEach(func(id, _ []byte) error {
					v := reps.Get(id)
					if v == nil {
						return corruptError{fmt.Errorf("received report %q indexed under %s but missing", id, day)}
					}
					e, err := DecodeReceived(v)
					if err != nil {
						return corruptError{fmt.Errorf("received report %q: %v", id, err)}
					}
					out = append(out, e)
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
	})
	return out, err
}

// EncodeReceived is the stored form of e (JSON, the report as its §4.4
// JSON), as the embedded store keeps it; a shared store keeps the same.
func EncodeReceived(e ReceivedEntry) ([]byte, error) {
	js, err := e.Report.JSON()
	if err != nil {
		return nil, err
	}
	return json.Marshal(storedEntry{Report: js, ReceivedAt: e.ReceivedAt.UTC(), Transport: e.Transport, MediaType: e.MediaType,
		DKIM: e.DKIM, DKIMDomain: e.DKIMDomain, From: e.From, Warnings: e.Warnings})
}

// DecodeReceived reads what EncodeReceived wrote; the report is parsed
// strictly again.
func DecodeReceived(v []byte) (ReceivedEntry, error) {
	var se storedEntry
	if err := json.Unmarshal(v, &se); err != nil {
		return ReceivedEntry{}, err
	}
	rep, _, err := ParseReport(se.Report)
	if err != nil {
		return ReceivedEntry{}, err
	}
	return ReceivedEntry{Report: *rep, ReceivedAt: se.ReceivedAt, Transport: se.Transport, MediaType: se.MediaType,
		DKIM: se.DKIM, DKIMDomain: se.DKIMDomain, From: se.From, Warnings: se.Warnings}, nil
}

// PruneReceived implements ReceivedReports.
func (r *ReceivedStore) PruneReceived(_ context.Context, before string) (int, error) {
	n := 0
	err := r.s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			days, reps := tx.Bucket(bucketRDays), tx.Bucket(bucketRReports)
			if days == nil {
				return nil
			}
			var old [][]byte
			_ = days.ForEachBucket(func(day []byte) error {
				if string(day) < before {
					old = append(old, append([]byte(nil), day...))
				}
				return nil
			})
			for _, day := range old {
				if reps != nil {
					if err := days.Bucket(day).ForEach(func(id, _ []byte) error {
						n++
						return reps.Delete(id)
					}); err != nil {
						return err
					}
				}
				if err := days.DeleteBucket(day); err != nil {
					return err
				}
			}
			return nil
		})
	})
	return n, err
}

// RetentionCutoff returns the first day kept when keeping keepDays days
// up to and including now's day: the argument for PruneReceived and
// ReceivedSince.
func RetentionCutoff(now time.Time, keepDays int) string {
	if keepDays < 1 {
		keepDays = 1
	}
	return Day(now.UTC().AddDate(0, 0, -(keepDays - 1)))
}
