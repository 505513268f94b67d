package maddymain

import (
	"errors"
	"fmt"
	"os"

	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/container"
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
	nodes, err := maddy.ReadConfig(path)
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
		return subcmd.DaneBlock{}, errors.New("no target.remote block with mx_auth { dane { ... } } found in " + path)
	}
	if len(insts) > 1 {
		fmt.Fprintf(os.Stderr, "note: %d dane blocks in %s; using the first\n", len(insts), path)
	}
	hostname, _ := globals["hostname"].(string)
	return subcmd.DaneBlock{Settings: insts[0].Settings(), PolicyTable: insts[0].PolicyTable(), Hostname: hostname}, nil
}

// tlsrptDirsFromConfig lists the tlsrpt directories of the dane blocks in
// the configuration at path.
func tlsrptDirsFromConfig(path string) ([]string, error) {
	nodes, err := maddy.ReadConfig(path)
	if err != nil {
		return nil, err
	}
	c := container.New()
	if _, _, err := maddy.ReadGlobals(c, nodes); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var dirs []string
	var walk func(ns []config.Node, inDane bool)
	walk = func(ns []config.Node, inDane bool) {
		for _, n := range ns {
			if n.Name == "tlsrpt" && inDane {
				if len(n.Args) == 1 && n.Args[0] == "off" {
					continue
				}
				dir := service.DefaultTLSRPTDir(c.Config.StateDirectory)
				for _, ch := range n.Children {
					if ch.Name == "dir" && len(ch.Args) == 1 {
						dir = ch.Args[0]
					}
				}
				if !seen[dir] {
					seen[dir] = true
					dirs = append(dirs, dir)
				}
				continue
			}
			walk(n.Children, n.Name == "dane")
		}
	}
	walk(nodes, false)
	return dirs, nil
}
