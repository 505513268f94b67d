package tlsrpt

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
)

// TestPostHTTPSRedirects: a 302 turns Go's POST into a body-less GET; its
// 200 must not count as a delivered report. A 307 repeats the POST with
// the report and is followed.
func TestPostHTTPSRedirects(t *testing.T) {
	netns.Required(t)
	col := &collector{}
	mux := http.NewServeMux()
	mux.HandleFunc("/found", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/report", http.StatusFound)
	})
	mux.HandleFunc("/temporary", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/report", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusOK) // a web page, not a report collector
			return
		}
		col.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.StartTLS()
	defer srv.Close()

	rep, err := BuildReport(ReportMeta{OrganizationName: "Org", ContactInfo: "r@sender.example"},
		"2026-11-30", "example.com", "id@sender.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := rep.Gzip()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := PostHTTPS(ctx, srv.Client(), srv.URL+"/found", gz); err == nil {
		t.Errorf("302 to a GET counted as delivered")
	}
	if n := col.count(); n != 0 {
		t.Fatalf("collector got %d reports after the 302", n)
	}
	if err := PostHTTPS(ctx, srv.Client(), srv.URL+"/temporary", gz); err != nil {
		t.Errorf("307: %v", err)
	}
	if n := col.count(); n != 1 {
		t.Errorf("collector got %d reports after the 307, want 1", n)
	}
}
