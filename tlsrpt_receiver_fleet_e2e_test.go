package daneguard_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// TestEndToEndReceiverFleet: two real maddy nodes, each with a
// target.tlsrpt_receiver naming the same real redis-server in
// shared_store. The same report mailed to both is accepted by both and
// new once (the second node logs the duplicate); `maddy tlsrpt received`
// on either node shows the fleet's reports, each once; with Redis
// stopped a node still accepts a report (250), and after Redis returns
// its push loop stores it, visible from the other node.
func TestEndToEndReceiverFleet(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{AOF: true})
	start := func(ip string) *maddybed.Maddy {
		dir := t.TempDir()
		conf := filepath.Join(dir, "maddy.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(`state_dir %[1]s
runtime_dir %[1]s
hostname mx.receiver.example
tls off

target.tlsrpt_receiver tlsrpt_in {
    shared_store %[2]s {
        retry_down 100ms
    }
}
smtp tcp://%[3]s:25 {
    destination tlsrpt@receiver.example { deliver_to &tlsrpt_in }
    default_destination { reject 550 5.1.1 "no such mailbox" }
}
`, dir, srv.URL(0), ip)), 0o600); err != nil {
			t.Fatal(err)
		}
		return maddybed.StartFile(t, conf, ip+":25")
	}
	a, b := start("127.0.0.61"), start("127.0.0.62")
	day := tlsrpt.Day(time.Now().UTC().AddDate(0, 0, -1))
	const to = "tlsrpt@receiver.example"
	mail := func(id string) []byte {
		rep := rcvReport(id, "Org "+id, day, "sts", "receiver.example", 3, 1, "starttls-not-supported", "127.0.0.61", "mx.receiver.example")
		return reportMail(t, to, id, tlsrpt.ContentTypeJSON, jsonOf(t, rep), nil, "")
	}
	for _, s := range []struct {
		m  *maddybed.Maddy
		ip string
		id string
	}{{a, "127.0.0.61", "both"}, {b, "127.0.0.62", "both"}, {b, "127.0.0.62", "b-only"}} {
		if got := submit(t, s.ip+":25", to, mail(s.id)); got != "250" {
			t.Fatalf("%s to %s: %s\n%s", s.id, s.ip, got, s.m.Log())
		}
	}
	dups := func(m *maddybed.Maddy) (n int) {
		for _, e := range m.Entries("daneguard/tlsrpt_receiver", "tlsrpt report received") {
			if e.Fields["duplicate"] == true {
				n++
			}
		}
		return n
	}
	if dups(a) != 0 || dups(b) != 1 {
		t.Fatalf("duplicates logged: a %d, b %d, want 0 and 1\n%s\n%s", dups(a), dups(b), a.Log(), b.Log())
	}
	received := func(m *maddybed.Maddy) []string {
		var days []struct {
			Reports int `json:"reports"`
			Orgs    []struct {
				Name string `json:"organization"`
			} `json:"organizations"`
		}
		out := runMaddy(t, m, "tlsrpt", "received", "--json", "--days", "7")
		if err := json.Unmarshal([]byte(out), &days); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var orgs []string
		total := 0
		for _, d := range days {
			total += d.Reports
			for _, o := range d.Orgs {
				orgs = append(orgs, o.Name)
			}
		}
		slices.Sort(orgs)
		return append([]string{fmt.Sprint(total)}, orgs...)
	}
	want := []string{"2", "Org b-only", "Org both"}
	for name, m := range map[string]*maddybed.Maddy{"a": a, "b": b} {
		if got := received(m); !slices.Equal(got, want) {
			t.Fatalf("tlsrpt received on %s: %v, want %v", name, got, want)
		}
	}

	// Redis stopped: a still accepts, and the fleet view says it cannot
	// be read rather than showing a partial one.
	srv.Stop()
	if got := submit(t, "127.0.0.61:25", to, mail("during-outage")); got != "250" {
		t.Fatalf("report with Redis down: %s\n%s", got, a.Log())
	}
	out, err := maddyCmd(t, a, "tlsrpt", "received", "--days", "7")
	if err == nil || !strings.Contains(out, "shared_store") {
		t.Fatalf("tlsrpt received with Redis down: %v\n%s", err, out)
	}
	srv.Restart()
	want = []string{"3", "Org b-only", "Org both", "Org during-outage"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := received(b)
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Redis returned, b shows %v, want %v\n%s", got, want, a.Log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// maddyCmd runs a maddy subcommand on m's configuration and returns its
// output and error (runMaddy fails the test on an error).
func maddyCmd(t *testing.T, m *maddybed.Maddy, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(maddybed.Binary(t), append([]string{"--config", m.Config}, args...)...).CombinedOutput()
	return string(out), err
}
