package selfcheck

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/maddy-dane/daneguard/dane"
)

// KeySource says who chooses the server's next key, which decides which
// TLSA records survive the next renewal.
type KeySource string

const (
	// SourceFile: `tls file CERT KEY`. The operator replaces the files and
	// chooses whether the key changes (the next-key workflow).
	SourceFile KeySource = "file"
	// SourceACME: maddy's tls.loader.acme (certmagic without key reuse):
	// every renewal brings a new key.
	SourceACME KeySource = "acme"
)

// ACMERenewalRatio is the part of a certificate's lifetime, counted back
// from its expiry, in which certmagic renews it: its
// DefaultRenewalWindowRatio (1/3, certmagic v0.21 maintain.go), which
// maddy's loader does not change. A 90-day certificate is renewed 30 days
// before it expires.
const ACMERenewalRatio = 1.0 / 3.0

// Fate is what happens to one TLSA record at the next key change.
type Fate string

const (
	// FateSurvives: the record matches the issuer of the leaf, which a new
	// leaf key does not change (DANE-TA(2), RFC 7672 §3.1.2).
	FateSurvives Fate = "survives-key-change"
	// FateDiesWithKey: the record matches the leaf key (3 1 x). It stays
	// valid across a renewal with the same key, not across a new key.
	FateDiesWithKey Fate = "dies-with-key"
	// FateDiesWithCert: the record matches the whole leaf certificate
	// (3 0 x): any renewal, even with the same key, breaks it.
	FateDiesWithCert Fate = "dies-with-certificate"
	// FateNoMatch: the record matches nothing in the current chain (an
	// old record, or one for a next key: see the next-key workflow).
	FateNoMatch Fate = "no-match"
	// FateUnusable: a sender ignores the record (RFC 7672 §3.1.3, RFC
	// 6698 §4.1).
	FateUnusable Fate = "unusable"
)

// RecordFate is one TLSA record of the RRset and what it matches.
type RecordFate struct {
	TLSA   dane.Record `json:"-"`
	Record string      `json:"record"`
	Usable bool        `json:"usable"`
	// MatchesChainIndex is the position in the chain (0 = leaf) of the
	// certificate the record matches, -1 for none.
	MatchesChainIndex int  `json:"matches_chain_index"`
	Fate              Fate `json:"fate"`
}

// RecordFates classifies records against chain (leaf first).
func RecordFates(records []dane.Record, chain []*x509.Certificate) []RecordFate {
	usable, _ := dane.Classify(records)
	isUsable := func(r dane.Record) bool {
		for _, u := range usable {
			if u.Equal(r) {
				return true
			}
		}
		return false
	}
	out := make([]RecordFate, 0, len(records))
	for _, r := range records {
		f := RecordFate{TLSA: r, Record: r.String(), Usable: isUsable(r), MatchesChainIndex: -1}
		if !f.Usable {
			f.Fate = FateUnusable
			out = append(out, f)
			continue
		}
		for i, c := range chain {
			// DANE-EE(3) designates the leaf only; DANE-TA(2) a CA
			// (RFC 7672 §3.1.1, §3.1.2).
			if (r.Usage == dane.DANEEE) != (i == 0) {
				continue
			}
			if r.Matches(c) {
				f.MatchesChainIndex = i
				break
			}
		}
		switch {
		case f.MatchesChainIndex < 0:
			f.Fate = FateNoMatch
		case r.Usage == dane.DANETA:
			f.Fate = FateSurvives
		case r.Selector == dane.SPKI:
			f.Fate = FateDiesWithKey
		default:
			f.Fate = FateDiesWithCert
		}
		out = append(out, f)
	}
	return out
}

// Rollover is the rollover readiness of one TLSA RRset for the chain the
// server loads.
type Rollover struct {
	Owner  string       `json:"tlsa_owner"`
	Source KeySource    `json:"key_source"`
	Fates  []RecordFate `json:"records"`
	// MatchesNow: some usable record matches the loaded chain.
	MatchesNow bool `json:"matches_now"`
	// SurvivesRenewal: some record survives a renewal that keeps the key.
	SurvivesRenewal bool `json:"survives_renewal_same_key"`
	// SurvivesKeyChange: some record survives a new leaf key.
	SurvivesKeyChange bool `json:"survives_key_change"`
	// NextKeyChange is when the key is expected to change: for the ACME
	// loader the start of its renewal window; for files the expiry of
	// the certificate (the latest date the operator must act by).
	NextKeyChange time.Time `json:"next_key_change"`
	// Publish are zone-file lines to add so that the RRset survives the
	// next key change; empty when nothing is missing.
	Publish []string `json:"publish,omitempty"`
}

// NextKeyChange returns when the leaf's key is next expected to change.
func NextKeyChange(leaf *x509.Certificate, src KeySource) time.Time {
	if src == SourceACME {
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		return leaf.NotAfter.Add(-time.Duration(float64(life) * ACMERenewalRatio))
	}
	return leaf.NotAfter
}

// AssessRollover judges records (the TLSA RRset at owner) against chain.
// For the ACME loader, a set without a surviving record gets the issuer's
// 2 1 1 to publish beside the current records (RFC 7672 §3.1.2; the
// issuer must be sent in the chain, RFC 7671 §5.2.2, as ACME CAs do).
// For files, a 3 1 1-only set is left as it is: the next-key workflow adds
// the next key's 3 1 1 two TTLs before the switch (RFC 7671 §8.1).
func AssessRollover(owner string, records []dane.Record, chain []*x509.Certificate, src KeySource) Rollover {
	ro := Rollover{Owner: owner, Source: src, Fates: RecordFates(records, chain)}
	if len(chain) == 0 {
		return ro
	}
	ro.NextKeyChange = NextKeyChange(chain[0], src)
	for _, f := range ro.Fates {
		switch f.Fate {
		case FateSurvives:
			ro.MatchesNow, ro.SurvivesRenewal, ro.SurvivesKeyChange = true, true, true
		case FateDiesWithKey:
			ro.MatchesNow, ro.SurvivesRenewal = true, true
		case FateDiesWithCert:
			ro.MatchesNow = true
		}
	}
	if src == SourceACME && !ro.SurvivesKeyChange {
		for _, f := range ro.Fates {
			if f.Fate == FateDiesWithKey || f.Fate == FateDiesWithCert {
				// Keep the records that work today, so nothing breaks
				// while the RRset changes.
				ro.Publish = append(ro.Publish, ZoneLine(owner, f.TLSA))
			}
		}
		if !ro.MatchesNow {
			ro.Publish = append(ro.Publish, ZoneLine(owner, RecordFor(dane.DANEEE, chain[0])))
		}
		if len(chain) > 1 {
			ro.Publish = append(ro.Publish, ZoneLine(owner, RecordFor(dane.DANETA, chain[1])))
		}
	}
	return ro
}

// StillMatches reports whether records will still authenticate the server
// at time at: before the next key change, the loaded chain checked by
// dane.Verify at that time (DANE-TA(2) checks dates, DANE-EE(3) does
// not); after it, only a DANE-TA(2) record of the issuer survives, and the
// issuer must still be valid then.
func StillMatches(records []dane.Record, chain []*x509.Certificate, src KeySource, refNames []string, at time.Time) bool {
	if len(chain) == 0 {
		return false
	}
	keyChanged := !at.Before(NextKeyChange(chain[0], src)) && src == SourceACME
	if !keyChanged {
		_, err := dane.Verify(chain, records, dane.VerifyOptions{ReferenceNames: refNames, Now: at})
		return err == nil
	}
	for _, f := range RecordFates(records, chain) {
		if f.Fate == FateSurvives && f.MatchesChainIndex > 0 {
			issuer := chain[f.MatchesChainIndex]
			if !at.Before(issuer.NotBefore) && !at.After(issuer.NotAfter) {
				return true
			}
		}
	}
	return false
}

// RecordFor returns the usage-selector-1-1 record (SPKI, SHA-256) of cert:
// 3 1 1 for a leaf, 2 1 1 for an issuer.
func RecordFor(u dane.Usage, cert *x509.Certificate) dane.Record {
	return SPKIRecord(u, cert.RawSubjectPublicKeyInfo)
}

// SPKIRecord returns "u 1 1 sha256(spki)".
func SPKIRecord(u dane.Usage, spki []byte) dane.Record {
	sum := sha256.Sum256(spki)
	return dane.Record{Usage: u, Selector: dane.SPKI, MatchingType: dane.SHA2_256, Data: sum[:]}
}

// ZoneLine renders a record as a zone-file line at owner.
func ZoneLine(owner string, r dane.Record) string {
	return fmt.Sprintf("%s IN TLSA %d %d %d %s", dnsFQDN(owner), r.Usage, r.Selector, r.MatchingType, hex.EncodeToString(r.Data))
}

func dnsFQDN(s string) string {
	if s == "" || s[len(s)-1] != '.' {
		return s + "."
	}
	return s
}
