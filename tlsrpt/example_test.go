package tlsrpt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"time"

	"github.com/maddy-dane/daneguard/tlsrpt"
)

func ExampleParsePolicy() {
	p, err := tlsrpt.ParsePolicy("v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://reports.example.com/v1/tlsrpt; x-note=hi")
	if err != nil {
		panic(err)
	}
	for _, u := range p.RUA {
		fmt.Println(u.Scheme, u)
	}
	fmt.Println(p.Extensions["x-note"])
	to, _ := tlsrpt.MailtoAddresses(p.RUA[0])
	fmt.Println(to)
	fmt.Println(p)

	_, err = tlsrpt.ParsePolicy("v=TLSRPTv1; rua=ftp://reports.example.com/")
	fmt.Println(err)
	// Output:
	// mailto mailto:tlsrpt@example.com
	// https https://reports.example.com/v1/tlsrpt
	// hi
	// [tlsrpt@example.com]
	// v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://reports.example.com/v1/tlsrpt
	// no mailto: or https: URI in rua
}

func ExampleSelectPolicy() {
	// The TXT records found at _smtp._tls.example.com.
	p, err := tlsrpt.SelectPolicy([]string{"some other record", "v=TLSRPTv1;rua=mailto:r@example.com"})
	fmt.Println(p, err)

	_, err = tlsrpt.SelectPolicy([]string{"v=TLSRPTv1;rua=mailto:a@example.com", "v=TLSRPTv1;rua=mailto:b@example.com"})
	fmt.Println(errors.Is(err, tlsrpt.ErrNoPolicy), err)
	// Output:
	// v=TLSRPTv1; rua=mailto:r@example.com <nil>
	// true tlsrpt: no TLSRPT policy: 2 TLSRPTv1 records
}

// sessions records a few outcomes of sessions to example.com on
// 2026-11-30 in st.
func sessions(st *tlsrpt.Store) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	dane := tlsrpt.Record{
		Domain:        "example.com",
		PolicyType:    tlsrpt.PolicyTLSA,
		PolicyStrings: []string{"3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d"},
		PolicyDomain:  "mx1.example.com", // the TLSA base domain
		MXHost:        "mx1.example.com",
		Success:       true,
	}
	failed := dane
	failed.Success = false
	failed.ResultType = tlsrpt.ResultCertificateNotTrusted
	failed.ReceivingIP = "192.0.2.25"
	failed.FailureReason = "no-match"
	for _, r := range []tlsrpt.Record{dane, dane, dane, failed} {
		if err := st.Add(at, r); err != nil {
			panic(err)
		}
	}
}

func ExampleBuildReport() {
	dir, err := os.MkdirTemp("", "tlsrpt-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := tlsrpt.OpenStore(filepath.Join(dir, "tlsrpt.db"), tlsrpt.StoreOptions{})
	if err != nil {
		panic(err)
	}
	sessions(st)

	meta := tlsrpt.ReportMeta{OrganizationName: "Example Sender", ContactInfo: "postmaster@sender.example"}
	day := "2026-11-30"
	aggs, err := st.Aggregates(day, "example.com")
	if err != nil {
		panic(err)
	}
	id := tlsrpt.ReportID(day, "example.com", meta.Submitter())
	rep, err := tlsrpt.BuildReport(meta, day, "example.com", id, aggs)
	if err != nil {
		panic(err)
	}
	js, err := rep.JSON()
	if err != nil {
		panic(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, js, "", "  "); err != nil {
		panic(err)
	}
	fmt.Print(out.String())
	fmt.Println(rep.Filename(meta.Submitter(), "example.com"))
	// Output:
	// {
	//   "organization-name": "Example Sender",
	//   "date-range": {
	//     "start-datetime": "2026-11-30T00:00:00Z",
	//     "end-datetime": "2026-11-30T23:59:59Z"
	//   },
	//   "contact-info": "postmaster@sender.example",
	//   "report-id": "20261130.example.com@sender.example",
	//   "policies": [
	//     {
	//       "policy": {
	//         "policy-type": "tlsa",
	//         "policy-string": [
	//           "3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d"
	//         ],
	//         "policy-domain": "mx1.example.com",
	//         "mx-host": "mx1.example.com"
	//       },
	//       "summary": {
	//         "total-successful-session-count": 3,
	//         "total-failure-session-count": 1
	//       },
	//       "failure-details": [
	//         {
	//           "result-type": "certificate-not-trusted",
	//           "receiving-mx-hostname": "mx1.example.com",
	//           "receiving-ip": "192.0.2.25",
	//           "failed-session-count": 1,
	//           "failure-reason-code": "no-match"
	//         }
	//       ]
	//     }
	//   ]
	// }
	// sender.example!example.com!1795996800!1796083199.json.gz
}

// ExampleSender_Tick drives the sender with a fixed clock, a canned TXT
// record and a submit function that prints the message instead of sending
// it: nothing leaves the process.
func ExampleSender_Tick() {
	dir, err := os.MkdirTemp("", "tlsrpt-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := tlsrpt.OpenStore(filepath.Join(dir, "tlsrpt.db"), tlsrpt.StoreOptions{})
	if err != nil {
		panic(err)
	}
	sessions(st)

	now := time.Date(2026, 12, 1, 0, 30, 0, 0, time.UTC)
	s := &tlsrpt.Sender{
		Store: st,
		Meta:  tlsrpt.ReportMeta{OrganizationName: "Example Sender", ContactInfo: "postmaster@sender.example"},
		From:  "tlsrpt-noreply@sender.example",
		LookupTXT: func(ctx context.Context, name string) ([]string, error) {
			fmt.Println("TXT lookup:", name)
			return []string{"v=TLSRPTv1; rua=mailto:tlsrpt@example.com"}, nil
		},
		Submit: func(ctx context.Context, from string, to []string, msg []byte) error {
			m, err := mail.ReadMessage(bytes.NewReader(msg))
			if err != nil {
				return err
			}
			fmt.Println("mail from", from, "to", to)
			fmt.Println("TLS-Report-Domain:", m.Header.Get("TLS-Report-Domain"))
			fmt.Println("TLS-Report-Submitter:", m.Header.Get("TLS-Report-Submitter"))
			return nil
		},
		Now:   func() time.Time { return now },
		Count: func(result string) { fmt.Println("count:", result) },
	}
	ctx := context.Background()

	// 00:30 UTC: the day ended, but SendAfter (1h) has not passed.
	if err := s.Tick(ctx); err != nil {
		panic(err)
	}
	fmt.Println("--- 01:30")
	now = now.Add(time.Hour)
	if err := s.Tick(ctx); err != nil {
		panic(err)
	}
	state, _ := st.State("2026-11-30", "example.com")
	fmt.Println(state.Outcome, state.Attempts, state.SentTo)
	// Output:
	// --- 01:30
	// TXT lookup: _smtp._tls.example.com.
	// count: built
	// mail from tlsrpt-noreply@sender.example to [tlsrpt@example.com]
	// TLS-Report-Domain: example.com
	// TLS-Report-Submitter: sender.example
	// count: sent
	// sent 1 [mailto:tlsrpt@example.com]
}

// ExampleSender_Run is the wiring in a real MTA: the system resolver for
// the TXT records, HTTPS for https: URIs, and the MTA's own submission for
// mailto: URIs. It needs the network, so it is compiled but not run.
func ExampleSender_Run() {
	st, err := tlsrpt.OpenStore("/var/lib/mta/tlsrpt.db", tlsrpt.StoreOptions{
		OnCorrupt: func(movedTo string, err error) {
			fmt.Println("TLS report store damaged, moved to", movedTo+":", err)
		},
	})
	if err != nil {
		panic(err)
	}

	// After each outbound SMTP session (one MX host, one connection):
	_ = st.Add(time.Now(), tlsrpt.Record{
		Domain:     "example.org",
		PolicyType: tlsrpt.PolicyNotFound,
		MXHost:     "mx.example.org",
		Success:    true,
	})

	s := &tlsrpt.Sender{
		Store:     st,
		Meta:      tlsrpt.ReportMeta{OrganizationName: "Example Sender", ContactInfo: "postmaster@sender.example"},
		From:      "tlsrpt-noreply@sender.example",
		LookupTXT: lookupTXT,
		Submit:    submitMail,
		Log:       func(msg string, kv ...any) { fmt.Println(append([]any{msg}, kv...)...) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)

	// Elsewhere, an operator's "send yesterday's reports now": the running
	// Sender picks the request up at its next tick.
	if err := st.RequestSend(tlsrpt.Day(time.Now().AddDate(0, 0, -1)), time.Now()); err != nil {
		fmt.Println(err)
	}
}

// ExampleSender_SendDay is a one-shot command, for example run by an
// operator in a second process while the MTA keeps running: it sends one
// day's reports at once and says what happened. A Sender's methods are not
// meant to be called concurrently, so this uses its own Sender rather than
// the one inside Run. It needs the network, so it is compiled but not run.
func ExampleSender_SendDay() {
	st, err := tlsrpt.OpenStore("/var/lib/mta/tlsrpt.db", tlsrpt.StoreOptions{})
	if err != nil {
		panic(err)
	}
	s := &tlsrpt.Sender{
		Store:     st,
		Meta:      tlsrpt.ReportMeta{OrganizationName: "Example Sender", ContactInfo: "postmaster@sender.example"},
		From:      "tlsrpt-noreply@sender.example",
		LookupTXT: lookupTXT,
		Submit:    submitMail,
	}
	outs, err := s.SendDay(context.Background(), tlsrpt.Day(time.Now().AddDate(0, 0, -1)))
	if err != nil {
		panic(err)
	}
	for _, o := range outs {
		fmt.Println(o.Day, o.Domain, o.Result, o.SentTo, o.Err)
	}
}

// lookupTXT adapts net.Resolver to LookupTXTFunc, which wants "no such
// name" as no records and no error: otherwise a domain without a TLSRPT
// record would be retried as if its DNS had failed.
func lookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := net.DefaultResolver.LookupTXT(ctx, name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	return txts, err
}

// submitMail stands for the MTA's message submission.
func submitMail(ctx context.Context, from string, to []string, msg []byte) error {
	return nil
}
