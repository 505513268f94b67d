package maddymain

import (
	"fmt"
	"os"

	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/container"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/internal/subcmd"
	daneguard "github.com/maddy-dane/daneguard/ports/maddy-0.9"
)

// loadDaneBlock configures the configuration file's modules the way
// `maddy run` (maddy 0.9's moduleConfigure) does, in a container of its
// own and without InitDirs (which would create the state directory) or
// starting anything, and returns the first `dane { }` block configured.
// dane blocks open nothing until they are started, so this is safe next
// to a running server.
func loadDaneBlock(path string) (subcmd.DaneBlock, error) {
	nodes, err := maddyconf.ReadFile(path)
	if err != nil {
		return subcmd.DaneBlock{}, err
	}
	c := container.New()
	saved := container.Global
	container.Global = c // maddy's inline-module code uses it
	defer func() { container.Global = saved }()
	globals, blocks, err := maddy.ReadGlobals(c, nodes)
	if err != nil {
		return subcmd.DaneBlock{}, err
	}
	// Relative paths in maddy.conf (table files, roots) are relative to
	// the state directory, where `maddy run` works.
	if dir := c.Config.StateDirectory; dir != "" {
		if err := os.Chdir(dir); err != nil {
			fmt.Fprintf(os.Stderr, "note: cannot enter the state directory (%v); relative paths in %s are taken from the current directory\n", err, path)
		}
	}
	before := len(daneguard.Instances())
	// RegisterModules configures the endpoints (and, through their
	// references, what they deliver to); configuring binds no port in
	// maddy 0.9.
	if err := maddy.RegisterModules(c, globals, blocks); err != nil {
		return subcmd.DaneBlock{}, err
	}
	// Top-level target.remote blocks nobody references yet.
	for _, b := range blocks {
		if b.Name != "target.remote" {
			continue
		}
		name := b.Name
		if len(b.Args) != 0 {
			name = b.Args[0]
		}
		if _, err := c.Modules.Get(name); err != nil {
			return subcmd.DaneBlock{}, err
		}
	}
	insts := daneguard.Instances()[before:]
	if len(insts) == 0 {
		return subcmd.DaneBlock{}, fmt.Errorf("%w in %s", subcmd.ErrNoDaneBlock, path)
	}
	if len(insts) > 1 {
		fmt.Fprintf(os.Stderr, "note: %d dane blocks in %s; using the first\n", len(insts), path)
	}
	hostname, _ := globals["hostname"].(string)
	return subcmd.DaneBlock{Settings: insts[0].Settings(), PolicyTable: insts[0].PolicyTable(), Hostname: hostname}, nil
}

// readWithGlobals parses the configuration and reads its global
// directives the way maddy 0.9 does, into a container of its own; it
// returns the nodes, the globals and the state directory.
func readWithGlobals(path string) ([]config.Node, map[string]interface{}, string, error) {
	nodes, err := maddyconf.ReadFile(path)
	if err != nil {
		return nil, nil, "", err
	}
	// A global `tls` directive creates its loader through maddy's
	// inline-module code, which needs container.Global (nil outside
	// `maddy run`: a nil dereference in maddy).
	c := container.New()
	saved := container.Global
	container.Global = c
	defer func() { container.Global = saved }()
	globals, _, err := maddy.ReadGlobals(c, nodes)
	if err != nil {
		return nil, nil, "", err
	}
	return nodes, globals, c.Config.StateDirectory, nil
}

// tlsrptDirsFromConfig lists the tlsrpt directories of the dane blocks in
// the configuration at path.
func tlsrptDirsFromConfig(path string) ([]string, error) {
	nodes, _, stateDir, err := readWithGlobals(path)
	if err != nil {
		return nil, err
	}
	return maddyconf.TLSRPTDirs(nodes, stateDir), nil
}

// receiverStoresFromConfig lists where the target.tlsrpt_receiver blocks
// of the configuration at path keep their reports.
func receiverStoresFromConfig(path string) ([]service.ReceiverStore, error) {
	nodes, globals, stateDir, err := readWithGlobals(path)
	if err != nil {
		return nil, err
	}
	return maddyconf.ReceiverStores(nodes, globals, stateDir)
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
