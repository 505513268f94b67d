package daneguard

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"github.com/foxcpp/maddy/framework/buffer"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/container"
	"github.com/foxcpp/maddy/framework/exterrors"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/foxcpp/maddy/framework/module/modules"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/service"
)

// ReceiverModuleName is the delivery target that receives the TLS reports
// (RFC 8460) other MTAs send about the operator's domains, as in the
// maddy 0.8 build (receiver.go at the repository root,
// docs/tlsrpt-receiver.md). The work is internal/service's Receiver.
const ReceiverModuleName = maddyconf.ReceiverModuleName

func init() { modules.Register(ReceiverModuleName, NewReceiver) }

// Receiver is the module instance: one per block. Configure parses and
// validates, Start opens the store and starts the HTTPS endpoint and the
// retention loop, Stop (or EarlyStop, on a configuration reload) stops
// them.
type Receiver struct {
	instName string
	log      *log.Logger
	stateDir string
	settings service.ReceiverSettings

	mu   sync.Mutex
	r    *service.Receiver // set by Start, read by deliveries
	stop sync.Once
}

// NewReceiver is the module factory. c is the container being configured.
func NewReceiver(c *container.C, _, instName string) (module.Module, error) {
	m := &Receiver{instName: instName}
	if c != nil {
		m.stateDir = c.Config.StateDirectory
		if c.DefaultLogger != nil {
			m.log = c.DefaultLogger.Sublogger("daneguard/tlsrpt_receiver")
		}
	}
	if m.log == nil {
		m.log = log.DefaultLogger.Sublogger("daneguard/tlsrpt_receiver")
	}
	return m, nil
}

func (m *Receiver) Name() string         { return ReceiverModuleName }
func (m *Receiver) InstanceName() string { return m.instName }

// Configure parses the block; it opens nothing (verify-config, and the
// new configuration of a reload while the old one still runs).
func (m *Receiver) Configure(inlineArgs []string, cfg *config.Map) error {
	if len(inlineArgs) != 0 {
		return fmt.Errorf("%s: inline arguments are not used", ReceiverModuleName)
	}
	s := service.DefaultReceiverSettings()
	s.Debug = m.log.IsDebug()
	if g, ok := cfg.Globals["debug"].(bool); ok {
		s.Debug = g
	}
	maddyconf.Declare(cfg, service.ReceiverDirectives, &s)
	if _, err := cfg.Process(); err != nil {
		return err
	}
	hostname, _ := cfg.Globals["hostname"].(string)
	if err := s.Validate(hostname, m.stateDir); err != nil {
		return config.NodeErr(cfg.Block, "%v", err)
	}
	m.settings = s
	return nil
}

// Start opens the store and starts the HTTPS endpoint and the retention
// loop. On error nothing is left running: maddy does not call Stop for a
// module whose Start failed.
func (m *Receiver) Start() error {
	r, err := service.NewReceiver(m.settings, service.ReceiverDeps{Log: maddyLog{l: m.log, debug: m.settings.Debug}})
	if err != nil {
		return fmt.Errorf("%s: %w", ReceiverModuleName, err)
	}
	if err := r.Start(); err != nil {
		_ = r.Close()
		return fmt.Errorf("%s: %w", ReceiverModuleName, err)
	}
	m.mu.Lock()
	m.r = r
	m.mu.Unlock()
	return nil
}

// EarlyStop runs on a configuration reload before the new configuration
// starts: it releases the HTTPS listener (https_listen), which the new
// block binds again. Report emails still in this instance's deliveries are
// stored all the same (the store is opened per operation); only the
// retention loop and the HTTPS endpoint stop.
func (m *Receiver) EarlyStop() error { return m.Stop() }

// Stop stops the HTTPS endpoint and the retention loop.
func (m *Receiver) Stop() error {
	m.stop.Do(func() {
		m.mu.Lock()
		r := m.r
		m.mu.Unlock()
		if r != nil {
			_ = r.Close()
		}
	})
	return nil
}

func (m *Receiver) receiver() *service.Receiver {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.r
}

// StartDelivery begins a delivery: every recipient routed here is the
// report mailbox.
func (m *Receiver) StartDelivery(_ context.Context, _ *module.MsgMetadata, _ string) (module.Delivery, error) {
	r := m.receiver()
	if r == nil {
		return nil, exterrors.WithTemporary(errors.New(ReceiverModuleName+": not started"), true)
	}
	return &receiverDelivery{r: r}, nil
}

type receiverDelivery struct{ r *service.Receiver }

func (d *receiverDelivery) AddRcpt(context.Context, string, smtp.RcptOptions) error { return nil }

// Body parses and stores the report; Commit has nothing left to do (the
// store syncs before Body returns). Refusals carry the 0.8 build's codes.
func (d *receiverDelivery) Body(ctx context.Context, header textproto.Header, body buffer.Buffer) error {
	rd, err := body.Open()
	if err != nil {
		return exterrors.WithTemporary(err, true)
	}
	defer rd.Close()
	err = d.r.DeliverEmail(ctx, header, rd)
	var rep *service.Reply
	if errors.As(err, &rep) {
		return &exterrors.SMTPError{
			Code:         rep.Code,
			EnhancedCode: exterrors.EnhancedCode(rep.Enhanced),
			Message:      rep.Message,
			TargetName:   ReceiverModuleName,
			Reason:       rep.Reason,
		}
	}
	return err
}

func (d *receiverDelivery) Abort(context.Context) error  { return nil }
func (d *receiverDelivery) Commit(context.Context) error { return nil }

var (
	_ module.DeliveryTarget     = (*Receiver)(nil)
	_ container.EarlyStopModule = (*Receiver)(nil)
)
