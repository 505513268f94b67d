package engine

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/miekg/dns"
)

// classify splits a secure TLSA RRset into usable records and a count of
// unusable ones (RFC 7672 §3.1, RFC 7671 §9 digest agility).
func classify(rrs []*dns.TLSA) ([]dane.Record, int) {
	usable, unusable := dane.ClassifyRRs(rrs)
	return usable, len(unusable)
}

// daneVerify authenticates the presented chain with the usable records and
// returns the matching record in "usage selector mtype" form.
func daneVerify(chain []*x509.Certificate, usable []dane.Record, names []string, now time.Time) (string, error) {
	m, err := dane.Verify(chain, usable, dane.VerifyOptions{ReferenceNames: names, Now: now})
	if err != nil {
		return "", err
	}
	r := m.Record
	return fmt.Sprintf("%d %d %d", r.Usage, r.Selector, r.MatchingType), nil
}

// reportTypeFor maps a DANE verification error onto an RFC 8460 result type.
func reportTypeFor(err error) string {
	var ve *dane.VerifyError
	if errors.As(err, &ve) {
		return ve.Reason.ResultType()
	}
	return "validation-failure"
}
