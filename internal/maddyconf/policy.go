package maddyconf

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/foxcpp/maddy/framework/config"
	modconfig "github.com/foxcpp/maddy/framework/config/module"
	"github.com/foxcpp/maddy/framework/exterrors"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/service"
)

// The mx_auth policy's per-message adapter, its SMTP errors and the tlsrpt
// block: the same source for both maddy versions, since
// DeliveryMXAuthPolicy, the MX/TLS levels, exterrors and
// modconfig.DeliveryDirective did not change between 0.8.2 and 0.9.4.

// ParseTLSRPT parses `tlsrpt [off] { ... }` (docs/tlsrpt.md); deliver_to
// names a maddy delivery target. stateDir is maddy's state directory.
func ParseTLSRPT(m *config.Map, n config.Node, stateDir string) (*service.TLSRPTSettings, module.DeliveryTarget, error) {
	t := service.DefaultTLSRPTSettings()
	switch {
	case len(n.Args) == 1 && n.Args[0] == "off":
		if len(n.Children) != 0 {
			return nil, nil, config.NodeErr(n, "tlsrpt off takes no block")
		}
		t.Off = true
		return &t, nil, nil
	case len(n.Args) != 0:
		return nil, nil, config.NodeErr(n, "usage: tlsrpt [off] { ... }")
	}
	var tgt module.DeliveryTarget
	cm := config.NewMap(m.Globals, n)
	Declare(cm, service.TLSRPTDirectives, &t)
	cm.Custom("deliver_to", false, false, nil, func(m *config.Map, n config.Node) (interface{}, error) {
		d, err := modconfig.DeliveryDirective(m, n)
		if err != nil {
			return nil, config.NodeErr(n, "deliver_to: %v", err)
		}
		return d, nil
	}, &tgt)
	if _, err := cm.Process(); err != nil {
		return nil, nil, err
	}
	hostname, _ := m.Globals["hostname"].(string)
	if err := t.Validate(hostname, stateDir); err != nil {
		return nil, nil, config.NodeErr(n, "%v", err)
	}
	return &t, tgt, nil
}

// Delivery adapts a service.Delivery to maddy's DeliveryMXAuthPolicy (the
// same interface in both maddy versions). svc returns the block's running
// service, nil before it runs; notReady is the error then.
type Delivery struct {
	svc      func() *service.Service
	notReady func() error
	d        *service.Delivery
}

// NewDelivery starts the policy's work for one message.
func NewDelivery(svc func() *service.Service, notReady func() error, meta *module.MsgMetadata) *Delivery {
	d := &Delivery{svc: svc, notReady: notReady}
	d.Reset(meta)
	return d
}

func (d *Delivery) Reset(meta *module.MsgMetadata) {
	s := d.svc()
	if s == nil {
		return
	}
	id := ""
	if meta != nil {
		id = meta.ID
	}
	if d.d == nil {
		d.d = s.Delivery(id)
		return
	}
	d.d.Reset(id)
}

func (d *Delivery) PrepareDomain(ctx context.Context, domain string) {
	if d.d != nil {
		d.d.PrepareDomain(ctx, domain)
	}
}

// PrepareConn does nothing: target.remote calls it after CheckMX for the
// same host, whose lookups are then already done and cached.
func (d *Delivery) PrepareConn(ctx context.Context, mx string) {}

func (d *Delivery) CheckMX(ctx context.Context, _ module.MXLevel, domain, mx string, _ bool) (module.MXLevel, error) {
	if d.d == nil {
		return module.MXNone, d.notReady()
	}
	v, proceed := d.d.CheckMX(ctx, domain, mx)
	switch {
	case !proceed:
		return module.MXNone, SMTPError(v)
	case !v.OK(): // a TLS report, delivered despite the refusal
		return module.MXNone, nil
	}
	// Lets local_policy { min_mx_level dnssec|mtasts } work: a
	// DNSSEC-signed MX RRset is the stronger assurance (MX_DNSSEC >
	// MX_MTASTS in maddy's order), else an enforce-mode MTA-STS policy
	// that lists the host.
	switch {
	case v.MXSecure:
		return module.MX_DNSSEC, nil
	case v.STSMXMatched:
		return module.MX_MTASTS, nil
	}
	return module.MXNone, nil
}

func (d *Delivery) CheckConn(ctx context.Context, _ module.MXLevel, _ module.TLSLevel, domain, mx string, st tls.ConnectionState) (module.TLSLevel, error) {
	if d.d == nil {
		return module.TLSNone, d.notReady()
	}
	v, proceed := d.d.CheckConn(ctx, domain, mx, st)
	switch {
	case !proceed:
		return module.TLSNone, SMTPError(v)
	case v.Result == engine.Authenticated:
		return module.TLSAuthenticated, nil
	}
	return module.TLSNone, nil
}

// SMTPError turns a Deferred verdict into the error target.remote returns.
// Every such error is temporary (4xx): the message stays queued.
func SMTPError(v *engine.Verdict) error {
	return &exterrors.SMTPError{
		Code:         v.Code,
		EnhancedCode: exterrors.EnhancedCode(v.EnhancedCode),
		Message:      v.Message,
		TargetName:   "remote",
		// maddy (0.8.2 and 0.9.4) wraps the last MX error into "No usable MXs, last
		// err: <this text>" and replaces its enhanced code with 5.4.0 (while
		// keeping 451), so the text carries our enhanced code for the
		// sender. See docs/verdicts.md.
		Reason: fmt.Sprintf("%d.%d.%d %s: %s", v.EnhancedCode[0], v.EnhancedCode[1], v.EnhancedCode[2], v.Reason, v.Message),
		Misc: map[string]interface{}{
			"domain":  v.Domain,
			"mx":      v.MX,
			"verdict": string(v.Result),
		},
	}
}
