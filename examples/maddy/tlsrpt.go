package main

import (
	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/subcmd"
)

// `maddy tlsrpt list|send|received` (internal/subcmd) with maddy 0.8's
// reading of the state directory.
func init() {
	cmd := subcmd.TLSRPT(func(path string) ([]string, error) {
		nodes, stateDir, err := readWithGlobals(path)
		if err != nil {
			return nil, err
		}
		return maddyconf.TLSRPTDirs(nodes, stateDir), nil
	})
	cmd.Subcommands = append(cmd.Subcommands, subcmd.Received(func(path string) ([]string, error) {
		nodes, stateDir, err := readWithGlobals(path)
		if err != nil {
			return nil, err
		}
		return maddyconf.ReceiverStores(nodes, stateDir), nil
	}, serverConf))
	extraCommands = append(extraCommands, cmd)
}

// readWithGlobals parses the configuration and reads its global
// directives the way maddy 0.8 does (state_dir lands in
// config.StateDirectory).
func readWithGlobals(path string) ([]config.Node, string, error) {
	nodes, err := maddyconf.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	if _, _, err := maddy.ReadGlobals(nodes); err != nil {
		return nil, "", err
	}
	return nodes, config.StateDirectory, nil
}
