// Package maddyconf is the part of the maddy glue that is the same source
// for maddy 0.8.2 and 0.9.4, shared by both builds' glue and mains: the
// directive loop that turns a maddy-free directive table
// (internal/service) into config.Map callbacks, the tlsrpt block, the
// mx_auth policy's per-message adapter and its SMTP errors (policy.go),
// the report-email submitter (submit.go), the start-up self-check's probe
// block and group inspection (probe.go),
// and walks over the parsed configuration for the subcommands (the
// self-check's view of the server, the TLS-RPT and received-report
// stores).
//
// It uses only maddy APIs that are identical in both versions:
// framework/config (config.Map, config.Node, config.NodeErr),
// framework/cfgparser.Read, framework/exterrors, framework/buffer,
// modconfig.DeliveryDirective
// and, of framework/module, DeliveryMXAuthPolicy, Delivery, the MX/TLS
// levels and MsgMetadata. The root module compiles this package against maddy 0.8.2,
// the ports/maddy-0.9 module against 0.9.4. Keep it that way: anything
// that differs between the versions (the module registry and interface,
// containers, loggers, delivery targets, ReadGlobals) belongs to each
// build's glue.
package maddyconf

import (
	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/internal/service"
)

// Declare registers a directive table with cfg. Every error gets the file
// and line of its directive; a directive that takes no block refuses one;
// a block directive (the dane block's `store URL { ... }`) has its
// children declared and processed in turn, then its Done check, with the
// line of the directive itself.
func Declare[T any](cfg *config.Map, ds []service.Directive[T], into *T) {
	for _, d := range ds {
		set := func(m *config.Map, n config.Node) error {
			if len(n.Children) != 0 && d.Block == nil {
				return config.NodeErr(n, "can't declare block here")
			}
			if err := d.Set(into, n.Args); err != nil {
				return config.NodeErr(n, "%v", err)
			}
			if d.Block == nil {
				return nil
			}
			cm := config.NewMap(m.Globals, n)
			Declare(cm, d.Block, into)
			if _, err := cm.Process(); err != nil {
				return err
			}
			if d.Done != nil {
				if err := d.Done(into); err != nil {
					return config.NodeErr(n, "%v", err)
				}
			}
			return nil
		}
		if d.Repeat {
			cfg.Callback(d.Name, set)
			continue
		}
		// Custom rejects a repeated directive with its line.
		cfg.Custom(d.Name, false, false, nil, func(m *config.Map, n config.Node) (interface{}, error) {
			return nil, set(m, n)
		}, nil)
	}
}
