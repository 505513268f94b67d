package engine

import (
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
)

func TestMain(m *testing.M) { netns.Main(m) }
