//go:build daneguard_testclock

package service

import (
	"os"
	"strings"
	"time"
)

// A test build only (go build -tags daneguard_testclock): the TLS report
// clock runs ahead of the real one by the duration written in the file
// named by DANEGUARD_TEST_CLOCK_FILE (empty or missing: no shift). The
// end-to-end tests of a fleet use it to end a day without waiting for
// midnight; production binaries have no such hook.
const testClockEnv = "DANEGUARD_TEST_CLOCK_FILE"

func init() {
	file := os.Getenv(testClockEnv)
	if file == "" {
		return
	}
	reportNow = func() time.Time {
		now := time.Now()
		b, err := os.ReadFile(file)
		if err != nil {
			return now
		}
		d, err := time.ParseDuration(strings.TrimSpace(string(b)))
		if err != nil {
			return now
		}
		return now.Add(d)
	}
}
