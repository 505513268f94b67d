package main

import (
	"fmt"
	"os"

	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/hooks"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/internal/subcmd"
)

// `maddy check` (with --self) and `maddy nextkey` (internal/subcmd) with
// maddy 0.8's configuration reading.
func init() {
	extraCommands = append(extraCommands,
		subcmd.Check(loadDaneBlock, subcmd.SelfCheck(loadDaneBlock, serverConf)),
		subcmd.NextKey(serverConf))
}

// serverConf is the self-check's view of maddy.conf (internal/maddyconf,
// the same for maddy 0.8 and 0.9).
func serverConf(path string) (*selfcheck.ServerConf, error) {
	nodes, err := maddyconf.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return maddyconf.ServerConf(path, nodes)
}

func loadDaneBlock(path string) (subcmd.DaneBlock, error) {
	inst, hostname, done, err := loadDaneConfig(path)
	if err != nil {
		return subcmd.DaneBlock{}, err
	}
	return subcmd.DaneBlock{Settings: inst.Settings, PolicyTable: inst.PolicyTable, Hostname: hostname, Done: done}, nil
}

// loadDaneConfig initializes the configuration like `maddy run` would,
// without starting endpoints or queues, and returns the first `dane { }`
// block it configured. done releases what the configuration opened.
func loadDaneConfig(path string) (*service.ConfiguredBlock, string, func(), error) {
	nodes, err := maddyconf.ReadFile(path)
	if err != nil {
		return nil, "", nil, err
	}
	globals, blocks, err := maddy.ReadGlobals(nodes)
	if err != nil {
		return nil, "", nil, err
	}
	// Relative paths in maddy.conf (table files, roots) are relative to
	// the state directory, where `maddy run` works.
	if dir := config.StateDirectory; dir != "" {
		if err := os.Chdir(dir); err != nil {
			fmt.Fprintf(os.Stderr, "note: cannot enter the state directory (%v); relative paths in %s are taken from the current directory\n", err, path)
		}
	}
	// NoRun: the dane blocks check their directories but open no store
	// and start nothing.
	module.NoRun = true
	done := func() { hooks.RunHooks(hooks.EventShutdown) }
	_, mods, err := maddy.RegisterModules(globals, blocks)
	if err != nil {
		done()
		return nil, "", nil, err
	}
	before := len(service.Configured())
	if _, err := initRemoteTargets(mods); err != nil {
		done()
		return nil, "", nil, err
	}
	insts := service.Configured()[before:]
	if len(insts) == 0 {
		done()
		return nil, "", nil, fmt.Errorf("%w in %s", subcmd.ErrNoDaneBlock, path)
	}
	if len(insts) > 1 {
		fmt.Fprintf(os.Stderr, "note: %d dane blocks in %s; using the first\n", len(insts), path)
	}
	hostname, _ := globals["hostname"].(string)
	return &insts[0], hostname, done, nil
}
