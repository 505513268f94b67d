package fleet

import (
	"errors"
	"testing"
	"time"
)

func TestParseAndValidate(t *testing.T) {
	s, err := Parse("rediss://user:secret@redis.example:6380/3")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Addr != "redis.example:6380" || s.DB != 3 || s.Username != "user" || s.Password != "secret" ||
		s.TLS == nil || s.TLS.ServerName != "redis.example" || s.KeyPrefix != DefaultKeyPrefix ||
		s.ReadTimeout != DefaultReadTimeout || s.DialTimeout != DefaultDialTimeout {
		t.Fatalf("parsed %+v", s)
	}
	s, err = Parse("redis://127.0.0.1")
	if err != nil || s.Addr != "127.0.0.1:6379" || s.DB != 0 || s.TLS != nil {
		t.Fatalf("defaults: %+v %v", s, err)
	}
	for _, bad := range []string{"http://x", "redis://", "redis://h:0", "redis://h:99999", "redis://h/16",
		"redis://h/x", "redis://h/1?db=2", "redis://h#f", "redis:opaque", "://"} {
		if _, err := Parse(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("Parse(%q): %v, want ErrBadURL", bad, err)
		}
	}
	for name, s := range map[string]Settings{
		"no address":   {},
		"timeout big":  {Addr: "h:1", ReadTimeout: 10 * time.Second},
		"timeout neg":  {Addr: "h:1", DialTimeout: -1},
		"bad prefix":   {Addr: "h:1", KeyPrefix: "a b"},
		"bad db":       {Addr: "h:1", DB: 99},
		"retry down":   {Addr: "h:1", RetryDown: time.Hour},
		"bad address":  {Addr: "h"},
		"glob in pref": {Addr: "h:1", KeyPrefix: "x*"},
	} {
		if err := s.Validate(); !errors.Is(err, ErrBadSettings) {
			t.Errorf("%s: %v, want ErrBadSettings", name, err)
		}
	}
}
