package tlsrpt

import (
	"context"
	"errors"
	"strings"
	"time"
)

// A report requested for a day that has not ended yet ("maddy tlsrpt send
// --day TODAY") covers only the sessions so far. RFC 8460 §4.1 has a
// report cover a full UTC day, so such a report is an extra: it goes out
// under a report-id of its own (receivers may deduplicate on report-id,
// §4.4) and does not count as the day's report, which still goes out
// complete after the day ends.

// early reports whether a report for day sent at now covers only part of
// the day.
func early(day string, now time.Time) bool {
	start, err := ParseDay(day)
	return err == nil && now.Before(start.Add(24*time.Hour))
}

// earlyReportID is the report-id of a partial report sent at now: the
// day's id with the time of sending before the "@".
func earlyReportID(day, domain, submitter string, now time.Time) string {
	id := ReportID(day, domain, submitter)
	i := strings.LastIndexByte(id, '@')
	return id[:i] + ".upto" + now.UTC().Format("150405") + id[i:]
}

// sendEarly builds and delivers the partial report of day (not ended yet)
// once, without retries, and records what happened in the Early* fields
// of the state only: Done, the attempts and the report-id of the day's
// report are left as they were.
func (s *Sender) sendEarly(ctx context.Context, day, domain string, st DeliveryState, now time.Time) Outcome {
	out := Outcome{Day: day, Domain: domain}
	pol, err := Discover(ctx, s.LookupTXT, domain)
	result := "sent"
	switch {
	case errors.Is(err, ErrNoPolicy):
		result, err = "no-policy", nil
	case err == nil:
		tmp := st
		tmp.ReportID = earlyReportID(day, domain, s.Meta.Submitter(), now)
		err = s.deliver(ctx, day, domain, pol, &tmp, &out, now)
	}
	st.EarlyAt, st.EarlyOutcome, st.EarlyError, st.EarlySentTo = now, result, "", out.SentTo
	if err != nil {
		result = "failed"
		st.EarlyOutcome, st.EarlyError = result, err.Error()
	}
	out.Result, out.Err = result, err
	if serr := s.saveState(ctx, day, domain, st); serr != nil && out.Err == nil {
		out.Err = serr
	}
	s.count(result)
	kv := []any{"day", day, "domain", domain, "result", result, "partial", true}
	if len(out.SentTo) != 0 {
		kv = append(kv, "sent_to", strings.Join(out.SentTo, ","))
	}
	if err != nil {
		kv = append(kv, "reason", err.Error())
	}
	s.log("report", kv...)
	return out
}
