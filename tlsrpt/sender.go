package tlsrpt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// SubmitFunc submits an email message (CRLF line ends, headers included)
// from the envelope sender from to the recipients.
type SubmitFunc func(ctx context.Context, from string, to []string, msg []byte) error

// Sender builds and delivers the reports kept in a Store.
type Sender struct {
	Store *Store
	Meta  ReportMeta
	// From is the envelope and header sender of report emails.
	From string
	// LookupTXT finds the "_smtp._tls" records.
	LookupTXT LookupTXTFunc
	// HTTPClient posts reports to https: URIs; nil means a client with
	// HTTPTimeout and the system roots.
	HTTPClient  *http.Client
	HTTPTimeout time.Duration
	// Submit sends report emails; nil disables mailto: URIs.
	Submit SubmitFunc
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SendAfter is how long after the end of a UTC day its reports go out
	// (RFC 8460 §4.1 suggests some delay). Default 1h.
	SendAfter time.Duration
	// RetryFor is how long after the first attempt a report is retried
	// (RFC 8460 §5.5: up to 24 hours). Default 24h.
	RetryFor time.Duration
	// InitialBackoff is the first retry delay, doubled at every attempt
	// up to MaxBackoff. Defaults 5m and 4h.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// KeepDays is how many days of records are kept; older unsent reports
	// are dropped. Default 7.
	KeepDays int
	// PollInterval is how often Run looks for work. Default 1m.
	PollInterval time.Duration
	// Log receives one line per event; nil discards them.
	Log func(msg string, kv ...any)
	// Count is told about every report: "built", "sent", "failed"
	// (given up), "retry", "no-policy", "expired"; nil ignores them.
	Count func(result string)
	// Shared, if set, makes this Sender one of a fleet's: reports are
	// built from the counts of every node and sent by one of them (see
	// Shared). Nil: reports come from Store alone.
	Shared Shared

	defaultsOnce sync.Once
}

func (s *Sender) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Sender) log(msg string, kv ...any) {
	if s.Log != nil {
		s.Log(msg, kv...)
	}
}

func (s *Sender) count(r string) {
	if s.Count != nil {
		s.Count(r)
	}
}

// defaults fills in the zero fields once, so that Run, Tick and SendDay
// may be called from different goroutines.
func (s *Sender) defaults() { s.defaultsOnce.Do(s.setDefaults) }

func (s *Sender) setDefaults() {
	if s.SendAfter == 0 {
		s.SendAfter = time.Hour
	}
	if s.RetryFor == 0 {
		s.RetryFor = 24 * time.Hour
	}
	if s.InitialBackoff == 0 {
		s.InitialBackoff = 5 * time.Minute
	}
	if s.MaxBackoff == 0 {
		s.MaxBackoff = 4 * time.Hour
	}
	if s.KeepDays == 0 {
		s.KeepDays = 7
	}
	if s.PollInterval == 0 {
		s.PollInterval = time.Minute
	}
	if s.HTTPTimeout == 0 {
		s.HTTPTimeout = 30 * time.Second
	}
	if s.HTTPClient == nil {
		s.HTTPClient = &http.Client{Timeout: s.HTTPTimeout}
	}
}

// Run calls Tick every PollInterval until ctx ends.
func (s *Sender) Run(ctx context.Context) {
	s.defaults()
	t := time.NewTicker(s.PollInterval)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log("tick failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Outcome is what one Tick did for one day and domain.
type Outcome struct {
	Day, Domain string
	Result      string // "sent", "retry", "failed", "no-policy", "expired"
	SentTo      []string
	Err         error
}

// Tick does the work that is due now: every day that ended at least
// SendAfter ago (or whose sending was requested) gets its reports built
// and delivered; failed deliveries are retried with exponential backoff
// until RetryFor has passed; days older than KeepDays are dropped.
func (s *Sender) Tick(ctx context.Context) error {
	_, err := s.tick(ctx)
	return err
}

func (s *Sender) tick(ctx context.Context) ([]Outcome, error) {
	s.defaults()
	if s.Shared != nil {
		return s.tickShared(ctx)
	}
	now := s.now()
	reqs, err := s.Store.takeRequests()
	if err != nil {
		return nil, err
	}
	list, err := s.Store.List()
	if err != nil {
		return nil, err
	}
	today, _ := ParseDay(Day(now))
	oldest := Day(today.AddDate(0, 0, -s.KeepDays))
	var outs []Outcome
	prune := false
	for _, p := range list {
		if p.Day < oldest {
			prune = true
		}
		if ctx.Err() != nil {
			return outs, ctx.Err()
		}
		if p.State.Done {
			continue
		}
		start, err := ParseDay(p.Day)
		if err != nil {
			continue
		}
		due := !now.Before(start.Add(24*time.Hour + s.SendAfter))
		if !due && !reqs[p.Day] {
			continue
		}
		if p.Day < oldest {
			st := p.State
			st.Done, st.Outcome, st.DoneAt = true, "expired", now
			if err := s.Store.SetState(p.Day, p.Domain, st); err != nil {
				return outs, err
			}
			s.count("expired")
			outs = append(outs, Outcome{Day: p.Day, Domain: p.Domain, Result: "expired"})
			continue
		}
		if !p.State.NextAttempt.IsZero() && now.Before(p.State.NextAttempt) && !reqs[p.Day] {
			continue
		}
		outs = append(outs, s.sendOne(ctx, p.Day, p.Domain, p.State, now))
	}
	if prune {
		if err := s.Store.Prune(oldest); err != nil {
			return outs, err
		}
	}
	return outs, nil
}

// SendDay builds and delivers the reports of day now, whatever their
// state, and returns what happened to each domain's report.
func (s *Sender) SendDay(ctx context.Context, day string) ([]Outcome, error) {
	s.defaults()
	if _, err := ParseDay(day); err != nil {
		return nil, err
	}
	list, err := s.Store.List()
	if err != nil {
		return nil, err
	}
	now := s.now()
	var outs []Outcome
	for _, p := range list {
		if p.Day != day {
			continue
		}
		st := p.State
		st.Done, st.Outcome = false, ""
		outs = append(outs, s.sendOne(ctx, p.Day, p.Domain, st, now))
	}
	return outs, nil
}

// sendOne builds and delivers one report and stores the new state.
func (s *Sender) sendOne(ctx context.Context, day, domain string, st DeliveryState, now time.Time) Outcome {
	out := Outcome{Day: day, Domain: domain}
	finish := func(result string, err error) Outcome {
		out.Result, out.Err = result, err
		if err != nil {
			st.LastError = err.Error()
		}
		if serr := s.saveState(ctx, day, domain, st); serr != nil && out.Err == nil {
			out.Err = serr
		}
		s.count(result)
		kv := []any{"day", day, "domain", domain, "result", result, "attempts", st.Attempts}
		if len(out.SentTo) != 0 {
			kv = append(kv, "sent_to", strings.Join(out.SentTo, ","))
		}
		if err != nil {
			kv = append(kv, "reason", err.Error())
		}
		s.log("report", kv...)
		return out
	}

	if early(day, now) {
		return s.sendEarly(ctx, day, domain, st, now)
	}
	pol, err := Discover(ctx, s.LookupTXT, domain)
	if errors.Is(err, ErrNoPolicy) {
		st.Done, st.Outcome, st.DoneAt = true, "no-policy", now
		return finish("no-policy", nil)
	}
	if err == nil {
		err = s.deliver(ctx, day, domain, pol, &st, &out, now)
	}
	st.Attempts++
	if st.FirstAttempt.IsZero() {
		st.FirstAttempt = now
	}
	if err == nil {
		st.Done, st.Outcome, st.DoneAt, st.LastError, st.NextAttempt = true, "sent", now, "", time.Time{}
		return finish("sent", nil)
	}
	backoff := s.InitialBackoff << (st.Attempts - 1)
	if backoff > s.MaxBackoff || backoff <= 0 {
		backoff = s.MaxBackoff
	}
	st.NextAttempt = now.Add(backoff)
	if st.NextAttempt.Sub(st.FirstAttempt) > s.RetryFor {
		// RFC 8460 §5.5: retry for up to 24 hours, then give up.
		st.Done, st.Outcome, st.DoneAt = true, "failed", now
		return finish("failed", err)
	}
	return finish("retry", err)
}

// deliver builds the report and sends it to every rua URI. RFC 8460 §3:
// the report counts as delivered once one URI accepted it.
func (s *Sender) deliver(ctx context.Context, day, domain string, pol *Policy, st *DeliveryState, out *Outcome, now time.Time) error {
	aggs, err := s.aggregatesFor(ctx, day, domain)
	if err != nil {
		return err
	}
	submitter := s.Meta.Submitter()
	if st.ReportID == "" {
		st.ReportID = ReportID(day, domain, submitter)
	}
	rep, err := BuildReport(s.Meta, day, domain, st.ReportID, aggs)
	if err != nil {
		return err
	}
	gz, err := rep.Gzip()
	if err != nil {
		return err
	}
	s.count("built")
	var errs []string
	for _, u := range pol.RUA {
		var derr error
		switch u.Scheme {
		case "https":
			derr = PostHTTPS(ctx, s.HTTPClient, u.String(), gz)
		case "mailto":
			derr = s.mail(ctx, u.String(), domain, submitter, rep, gz, now)
		}
		if derr != nil {
			errs = append(errs, u.String()+": "+derr.Error())
			continue
		}
		out.SentTo = append(out.SentTo, u.String())
	}
	st.SentTo = out.SentTo
	if len(out.SentTo) == 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	if len(errs) != 0 {
		s.log("report partly delivered", "day", day, "domain", domain, "errors", strings.Join(errs, "; "))
	}
	return nil
}

func (s *Sender) mail(ctx context.Context, uri, domain, submitter string, rep *Report, gz []byte, now time.Time) error {
	if s.Submit == nil || s.From == "" {
		return errors.New("email delivery is not configured")
	}
	pol, err := ParsePolicy("v=TLSRPTv1;rua=" + uri)
	if err != nil {
		return err
	}
	to, err := MailtoAddresses(pol.RUA[0])
	if err != nil {
		return err
	}
	msg, err := ComposeEmail(EmailOptions{
		From: s.From, To: to, Domain: normDomain(domain), Submitter: submitter,
		ReportID: rep.ReportID, Filename: rep.Filename(submitter, domain), Gzip: gz, Date: now,
		Organization: s.Meta.OrganizationName, Start: rep.DateRange.Start, End: rep.DateRange.End,
	})
	if err != nil {
		return err
	}
	if err := s.Submit(ctx, s.From, to, msg); err != nil {
		return fmt.Errorf("submitting: %w", err)
	}
	return nil
}
