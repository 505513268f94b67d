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
	"github.com/foxcpp/maddy/framework/exterrors"
	"github.com/foxcpp/maddy/framework/hooks"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/service"
)

// ReceiverModuleName is the delivery target that receives the TLS reports
// (RFC 8460) other MTAs send about the operator's domains, to the mailbox
// their `_smtp._tls` record names: route that address to it in a
// destination rule (docs/tlsrpt-receiver.md). "receiver" because it is
// the receiving end of what the dane block's tlsrpt sends, and it sits
// next to target.remote and target.queue as a target.
const ReceiverModuleName = maddyconf.ReceiverModuleName

func init() { module.Register(ReceiverModuleName, NewReceiver) }

// Receiver is the module instance: one per block.
type Receiver struct {
	instName string
	r        *service.Receiver
	close    sync.Once
}

// NewReceiver is the module factory.
func NewReceiver(_, instName string, _, inlineArgs []string) (module.Module, error) {
	if len(inlineArgs) != 0 {
		return nil, fmt.Errorf("%s: inline arguments are not used", ReceiverModuleName)
	}
	return &Receiver{instName: instName}, nil
}

func (m *Receiver) Name() string         { return ReceiverModuleName }
func (m *Receiver) InstanceName() string { return m.instName }

// Init parses the block, opens the store and starts the HTTPS endpoint
// and the retention loop; a failed start undoes what it started.
func (m *Receiver) Init(cfg *config.Map) error {
	s, err := parseReceiver(cfg)
	if err != nil {
		return err
	}
	lg := maddyLog{log.Logger{Name: "daneguard/tlsrpt_receiver", Debug: s.Debug}}
	r, err := service.NewReceiver(s, service.ReceiverDeps{Log: lg, NoRun: module.NoRun})
	if err != nil {
		return fmt.Errorf("%s: %w", ReceiverModuleName, err)
	}
	if err := r.Start(); err != nil {
		_ = r.Close()
		return fmt.Errorf("%s: %w", ReceiverModuleName, err)
	}
	m.r = r
	// An inline block (deliver_to tlsrpt_receiver { }) is not closed by
	// maddy; the hook closes every instance once.
	hooks.AddHook(hooks.EventShutdown, func() { _ = m.Close() })
	return nil
}

// parseReceiver parses and validates the block of cfg.
func parseReceiver(cfg *config.Map) (service.ReceiverSettings, error) {
	s := service.DefaultReceiverSettings()
	s.Debug = log.DefaultLogger.Debug
	if g, ok := cfg.Globals["debug"].(bool); ok {
		s.Debug = g
	}
	maddyconf.Declare(cfg, service.ReceiverDirectives, &s)
	if _, err := cfg.Process(); err != nil {
		return s, err
	}
	hostname, _ := cfg.Globals["hostname"].(string)
	if err := s.Validate(hostname, config.StateDirectory); err != nil {
		return s, config.NodeErr(cfg.Block, "%v", err)
	}
	return s, nil
}

// Close stops the HTTPS endpoint and the retention loop.
func (m *Receiver) Close() error {
	m.close.Do(func() {
		if m.r != nil {
			_ = m.r.Close()
		}
	})
	return nil
}

// Start begins a delivery: every recipient routed here is the report
// mailbox.
func (m *Receiver) Start(_ context.Context, _ *module.MsgMetadata, _ string) (module.Delivery, error) {
	if m.r == nil {
		return nil, exterrors.WithTemporary(errors.New(ReceiverModuleName+": not initialized"), true)
	}
	return &receiverDelivery{m: m}, nil
}

type receiverDelivery struct{ m *Receiver }

func (d *receiverDelivery) AddRcpt(context.Context, string, smtp.RcptOptions) error { return nil }

// Body parses and stores the report; Commit has nothing left to do (the
// store syncs before Body returns).
func (d *receiverDelivery) Body(ctx context.Context, header textproto.Header, body buffer.Buffer) error {
	rd, err := body.Open()
	if err != nil {
		return exterrors.WithTemporary(err, true)
	}
	defer rd.Close()
	err = d.m.r.DeliverEmail(ctx, header, rd)
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
