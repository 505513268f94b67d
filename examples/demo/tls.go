package demo

import (
	"crypto/tls"

	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

func tlsConfig(l *pki.Leaf) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{l.TLSCertificate()}}
}
