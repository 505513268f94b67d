package tlsrpt

import (
	"os"
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	netns.Main(m)
}
