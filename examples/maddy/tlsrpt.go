package main

import (
	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/internal/subcmd"
)

func init() {
	cmd := subcmd.TLSRPT(tlsrptDirsFromConfig)
	cmd.Subcommands = append(cmd.Subcommands, receivedCommand())
	extraCommands = append(extraCommands, cmd)
}

func tlsrptDirsFromConfig(path string) ([]string, error) {
	nodes, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	if _, _, err := maddy.ReadGlobals(nodes); err != nil {
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
				dir := service.DefaultTLSRPTDir(config.StateDirectory)
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
