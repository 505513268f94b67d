package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults and bounds of Settings. The timeouts are small on purpose: the
// shared store is consulted next to deliveries, and a slow Redis must cost
// a delivery at most one bounded wait (after which the store is marked down
// and skipped, see Client).
const (
	DefaultDialTimeout  = 500 * time.Millisecond
	DefaultReadTimeout  = 250 * time.Millisecond
	DefaultWriteTimeout = 250 * time.Millisecond
	// MaxTimeout bounds every timeout an administrator may set.
	MaxTimeout = 5 * time.Second
	// DefaultKeyPrefix starts every key daneguard writes, so that a Redis
	// database can be shared with other applications.
	DefaultKeyPrefix = "daneguard:"
	// DefaultRetryDown is how long the store stays marked down after a
	// failure before an operation is tried again.
	DefaultRetryDown = 2 * time.Second
)

// Settings configure the connection to the shared store. Parse fills them
// from a URL; Validate checks them.
type Settings struct {
	// Addr is host:port of the Redis server.
	Addr string
	// DB is the database number (the URL's path).
	DB int
	// Username and Password authenticate (AUTH); both optional.
	Username, Password string
	// TLS, if set, is used for the connection (rediss:// URLs, or the
	// tls options). Its ServerName defaults to Addr's host.
	TLS *tls.Config
	// Timeouts of one operation: connecting, reading a reply, writing a
	// command. Defaults above; each at most MaxTimeout.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	// KeyPrefix starts every key. Default DefaultKeyPrefix.
	KeyPrefix string
	// RetryDown: after a failed operation the store is treated as down
	// for this long (operations fail at once, without waiting on Redis).
	// Default DefaultRetryDown.
	RetryDown time.Duration
}

// Errors of Parse and Validate.
var (
	ErrBadURL      = errors.New("fleet: bad store URL")
	ErrBadSettings = errors.New("fleet: bad store settings")
)

// Parse reads a store URL, redis://[user[:password]@]host[:port][/db] or
// rediss://... for TLS. The port defaults to 6379, the database to 0.
// Query parameters are not accepted (options have directives of their
// own). The result still needs Validate after other options are set.
func Parse(raw string) (Settings, error) {
	var s Settings
	u, err := url.Parse(raw)
	if err != nil {
		return s, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	switch u.Scheme {
	case "redis":
	case "rediss":
		s.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	default:
		return s, fmt.Errorf("%w %q: scheme must be redis or rediss", ErrBadURL, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return s, fmt.Errorf("%w %q: no query, fragment or opaque part allowed", ErrBadURL, raw)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return s, fmt.Errorf("%w %q: no host", ErrBadURL, raw)
	}
	if port == "" {
		port = "6379"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return s, fmt.Errorf("%w %q: bad port", ErrBadURL, raw)
	}
	s.Addr = net.JoinHostPort(host, port)
	if p := strings.Trim(u.Path, "/"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 15 {
			return s, fmt.Errorf("%w %q: database must be a number 0-15", ErrBadURL, raw)
		}
		s.DB = n
	}
	if u.User != nil {
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
	}
	return s, nil
}

// LoadCA adds the PEM certificates of file to the settings' TLS roots,
// turning TLS on.
func (s *Settings) LoadCA(file string) error {
	pem, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%w: tls ca: %v", ErrBadSettings, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%w: tls ca %s: no PEM certificate", ErrBadSettings, file)
	}
	s.EnableTLS().RootCAs = pool
	return nil
}

// LoadClientCert sets the client certificate for TLS, turning TLS on.
func (s *Settings) LoadClientCert(certFile, keyFile string) error {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("%w: tls client certificate: %v", ErrBadSettings, err)
	}
	s.EnableTLS().Certificates = []tls.Certificate{c}
	return nil
}

// EnableTLS turns TLS on (TLS 1.2 or later, the system roots unless LoadCA
// sets others) and returns the configuration.
func (s *Settings) EnableTLS() *tls.Config {
	if s.TLS == nil {
		s.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return s.TLS
}

// Validate fills in defaults and checks the settings.
func (s *Settings) Validate() error {
	if s.Addr == "" {
		return fmt.Errorf("%w: no address", ErrBadSettings)
	}
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return fmt.Errorf("%w: address %q: %v", ErrBadSettings, s.Addr, err)
	}
	if s.DB < 0 || s.DB > 15 {
		return fmt.Errorf("%w: database %d not in 0-15", ErrBadSettings, s.DB)
	}
	for _, t := range []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{{"dial timeout", &s.DialTimeout, DefaultDialTimeout}, {"read timeout", &s.ReadTimeout, DefaultReadTimeout},
		{"write timeout", &s.WriteTimeout, DefaultWriteTimeout}} {
		if *t.d == 0 {
			*t.d = t.def
		}
		if *t.d < 0 || *t.d > MaxTimeout {
			return fmt.Errorf("%w: %s %v not in (0, %v]", ErrBadSettings, t.name, *t.d, MaxTimeout)
		}
	}
	if s.RetryDown == 0 {
		s.RetryDown = DefaultRetryDown
	}
	if s.RetryDown < 0 || s.RetryDown > time.Minute {
		return fmt.Errorf("%w: retry_down %v not in (0, 1m]", ErrBadSettings, s.RetryDown)
	}
	if s.KeyPrefix == "" {
		s.KeyPrefix = DefaultKeyPrefix
	}
	if strings.ContainsAny(s.KeyPrefix, " \t\r\n*?[]{}") {
		return fmt.Errorf("%w: key prefix %q has spaces or pattern characters", ErrBadSettings, s.KeyPrefix)
	}
	if s.TLS != nil && s.TLS.ServerName == "" {
		host, _, _ := net.SplitHostPort(s.Addr)
		s.TLS.ServerName = host
	}
	return nil
}
