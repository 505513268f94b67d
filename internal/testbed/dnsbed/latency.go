package dnsbed

import (
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Latency and the query log let a test measure what a resolver's cache
// misses cost. unbound forwards every query it cannot answer from its cache
// to the Server (UnboundOptions has no other upstream), so a delay added
// here before each answer is the round-trip time between a validating
// resolver and the authoritative servers of the Internet, for every query
// type (DNSKEY and DS included), while answers unbound serves from its
// cache stay immediate. The query log records when each such query arrived
// and when it was answered, from which the number of round trips a client
// waited for one after the other can be read.
//
// The delay is applied in the handler: UDP queries are handled each on its
// own goroutine, so they wait in parallel as on a real network; queries
// sharing one TCP connection are answered in turn (miekg/dns serves a TCP
// connection sequentially), which is slower than a real server pipelining
// its answers. unbound only uses TCP after a truncated UDP answer.

// QueryRecord is one query the server received, in the query log.
type QueryRecord struct {
	// Name is the lower-cased query name, fully qualified.
	Name string
	// Type is the query type (dns.TypeA, ...).
	Type uint16
	// TCP reports whether the query came over TCP.
	TCP bool
	// Received is when the query arrived; Answered is when the answer,
	// built after the delay, was about to be written (for a Drop fault,
	// which sends nothing, when it would have been).
	Received, Answered time.Time
	// Rcode is the response code sent, -1 for no answer (Drop).
	Rcode int
}

// String renders the record as "A mx.example.", with "/tcp" for TCP.
func (q QueryRecord) String() string {
	s := dns.TypeToString[q.Type] + " " + q.Name
	if q.TCP {
		s += "/tcp"
	}
	return s
}

// SetDelay makes the server wait d before answering every query (0, the
// default, answers at once). It may be changed while the server runs and
// applies to faulted queries too.
func (s *Server) SetDelay(d time.Duration) {
	if d < 0 {
		d = 0
	}
	s.delay.Store(int64(d))
}

// SetQueryLog turns the query log on or off (off by default). Turning it on
// keeps the records already logged; ResetCounts empties the log.
func (s *Server) SetQueryLog(on bool) { s.qlogOn.Store(on) }

// QueryLog returns the queries logged since the log was turned on or since
// the last ResetCounts, in the order they were answered.
func (s *Server) QueryLog() []QueryRecord {
	s.qlogMu.Lock()
	defer s.qlogMu.Unlock()
	return append([]QueryRecord(nil), s.qlog...)
}

func (s *Server) wait() {
	if d := time.Duration(s.delay.Load()); d > 0 {
		time.Sleep(d)
	}
}

func (s *Server) record(req, resp *dns.Msg, received, answered time.Time, isTCP bool) {
	if !s.qlogOn.Load() {
		return
	}
	r := QueryRecord{TCP: isTCP, Received: received, Answered: answered, Rcode: -1}
	if len(req.Question) == 1 {
		q := req.Question[0]
		r.Type = q.Qtype
		var err error
		if r.Name, err = canonicalName(q.Name); err != nil {
			r.Name = strings.ToLower(q.Name)
		}
	}
	if resp != nil {
		r.Rcode = resp.Rcode
	}
	s.qlogMu.Lock()
	s.qlog = append(s.qlog, r)
	s.qlogMu.Unlock()
}
