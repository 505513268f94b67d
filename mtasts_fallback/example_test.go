package mtastsfallback_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
)

func ExampleParsePolicy() {
	p, err := mtastsfallback.ParsePolicy([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"))
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Mode, p.MaxAge)
	fmt.Println(p.MatchMX("mail.example.com"), p.MatchMX("mx1.example.net"), p.MatchMX("a.b.example.net"))
	fmt.Println(p.CheckMX("mx.attacker.example"))
	// Output:
	// enforce 604800
	// true true false
	// mta-sts: validation-failure [mx-not-in-policy]: MX host "mx.attacker.example" does not match any mx pattern of the policy for ""
}

func ExampleParseTXT() {
	id, err := mtastsfallback.ParseTXT([]string{"v=spf1 -all", "v=STSv1; id=20160831085700Z;"})
	fmt.Println(id, err)
	_, err = mtastsfallback.ParseTXT([]string{"v=STSv1; id=1", "v=STSv1; id=2"})
	fmt.Println(err)
	// Output:
	// 20160831085700Z <nil>
	// more than one MTA-STS TXT record: 2 records begin with "v=STSv1"
}

// Example_delivery sketches how a sending MTA uses the package. It is
// compiled, not run: it needs the network.
func Example_delivery() {
	ctx := context.Background()
	m, err := mtastsfallback.NewManager(mtastsfallback.Config{
		LookupTXT: net.DefaultResolver.LookupTXT,
		Logger:    slog.Default(),
	})
	if err != nil {
		panic(err)
	}
	go m.Run(ctx)
	defer m.Close()

	res, err := m.Policy(ctx, "example.com")
	if err != nil {
		panic(err)
	}
	if res.Err != nil {
		slog.Warn("MTA-STS discovery problem", "error", res.Err)
	}
	for _, mx := range []string{"mx1.example.com", "mx2.example.com"} {
		if err := res.Policy.CheckMX(mx); err != nil && !mtastsfallback.IsReportOnly(err) {
			continue // not an allowed MX: try the next one
		}
		// Connect, EHLO, STARTTLS with SNI = mx and no verification.
		state, err := smtpStartTLS(mx)
		if err != nil {
			continue
		}
		err = mtastsfallback.CheckConn(res.Policy, mx, state, nil, time.Now())
		if err != nil && !mtastsfallback.IsReportOnly(err) {
			continue // enforce: do not deliver over this connection
		}
		// deliver...
		return
	}
}

// smtpStartTLS stands for the MTA's own SMTP client. It returns the zero
// ConnectionState if the server does not offer STARTTLS.
func smtpStartTLS(mx string) (tls.ConnectionState, error) {
	return tls.ConnectionState{}, nil
}
