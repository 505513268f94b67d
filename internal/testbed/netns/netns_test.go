package netns

import (
	"net"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

func TestNamespaceIsPrivate(t *testing.T) {
	Required(t)
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" {
		t.Fatalf("interfaces inside the namespace = %v, want only lo", ifs)
	}
	if ifs[0].Flags&net.FlagUp == 0 {
		t.Fatal("lo is down")
	}
	// Port 25 on any loopback address is ours to bind inside.
	l, err := net.Listen("tcp", "127.0.0.25:25")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "nameserver "+ResolverAddr) {
		t.Fatalf("resolv.conf = %q", b)
	}
}
