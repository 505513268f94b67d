package redisbed

import (
	"context"
	"testing"
)

// TestStopRestart checks the bed itself: a server answers, is gone after
// Stop, and with AOF keeps its data across Restart.
func TestStopRestart(t *testing.T) {
	s := Start(t, Options{AOF: true, Password: "pw"})
	ctx := context.Background()
	if r, err := s.Do(ctx, "SET", "k", "v"); err != nil || r != "+OK" {
		t.Fatalf("SET: %q %v", r, err)
	}
	s.Stop()
	if _, err := s.Do(ctx, "PING"); err == nil {
		t.Fatal("server still answers after Stop")
	}
	s.Restart()
	if r, err := s.Do(ctx, "GET", "k"); err != nil || r != "$1" {
		t.Fatalf("GET after restart: %q %v (AOF lost the write?)", r, err)
	}
}

// TestNoPersistence checks that without AOF a restart starts empty.
func TestNoPersistence(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	if r, err := s.Do(ctx, "SET", "k", "v"); err != nil || r != "+OK" {
		t.Fatalf("SET: %q %v", r, err)
	}
	s.Stop()
	s.Restart()
	if r, err := s.Do(ctx, "GET", "k"); err != nil || r != "$-1" {
		t.Fatalf("GET after restart: %q %v, want nil", r, err)
	}
}
