package main

import (
	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/internal/subcmd"
)

// `maddy tlsrpt list|send|received` (internal/subcmd) with maddy 0.8's
// reading of the state directory.
func init() {
	cmd := subcmd.TLSRPT(func(path string) ([]string, error) {
		nodes, _, stateDir, err := readWithGlobals(path)
		if err != nil {
			return nil, err
		}
		return maddyconf.TLSRPTDirs(nodes, stateDir), nil
	})
	cmd.Subcommands = append(cmd.Subcommands, subcmd.Received(func(path string) ([]service.ReceiverStore, error) {
		nodes, globals, stateDir, err := readWithGlobals(path)
		if err != nil {
			return nil, err
		}
		return maddyconf.ReceiverStores(nodes, globals, stateDir)
	}, serverConf))
	extraCommands = append(extraCommands, cmd)
}

// readWithGlobals parses the configuration and reads its global
// directives the way maddy 0.8 does (state_dir lands in
// config.StateDirectory).
func readWithGlobals(path string) ([]config.Node, map[string]interface{}, string, error) {
	nodes, err := maddyconf.ReadFile(path)
	if err != nil {
		return nil, nil, "", err
	}
	globals, _, err := maddy.ReadGlobals(nodes)
	if err != nil {
		return nil, nil, "", err
	}
	return nodes, globals, config.StateDirectory, nil
}
