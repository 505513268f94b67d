package maddyconf

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"github.com/foxcpp/maddy/framework/buffer"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// SubmitVia submits report emails through a maddy delivery target, so that
// the admin's pipeline (DKIM signing, queue) applies. start is the target's
// Start (maddy 0.8) or StartDelivery (0.9) method; module.Delivery is the
// same in both.
func SubmitVia(start func(ctx context.Context, meta *module.MsgMetadata, from string) (module.Delivery, error)) tlsrpt.SubmitFunc {
	return func(ctx context.Context, from string, to []string, msg []byte) error {
		br := bufio.NewReader(bytes.NewReader(msg))
		hdr, err := textproto.ReadHeader(br)
		if err != nil {
			return fmt.Errorf("parsing the report email: %w", err)
		}
		var body bytes.Buffer
		if _, err := body.ReadFrom(br); err != nil {
			return err
		}
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		meta := &module.MsgMetadata{
			ID:              service.ReportMsgIDPrefix + hex.EncodeToString(rnd[:]),
			OriginalFrom:    from,
			DontTraceSender: true,
			SMTPOpts:        smtp.MailOptions{Size: int64(len(msg))},
		}
		d, err := start(ctx, meta, from)
		if err != nil {
			return err
		}
		for _, rcpt := range to {
			if err := d.AddRcpt(ctx, rcpt, smtp.RcptOptions{}); err != nil {
				_ = d.Abort(ctx)
				return err
			}
		}
		if err := d.Body(ctx, hdr, buffer.MemoryBuffer{Slice: body.Bytes()}); err != nil {
			_ = d.Abort(ctx)
			return err
		}
		return d.Commit(ctx)
	}
}
