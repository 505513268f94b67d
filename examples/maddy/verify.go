package main

import (
	"fmt"
	"os"

	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/hooks"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/urfave/cli/v2"
)

func verifyConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify-config",
		Usage: "Check the configuration file (syntax, module names, and every target.remote block including mx_auth { dane }) without starting the server",
		Action: func(c *cli.Context) error {
			if err := verifyConfig(c.Path("config")); err != nil {
				return cli.Exit("configuration error: "+err.Error(), 2)
			}
			fmt.Println("configuration OK:", c.Path("config"))
			return nil
		},
	}
}

// verifyConfig parses the configuration with maddy's own parser, registers
// every block like `maddy run` does, and initializes the target.remote
// blocks (and what they reference: tables, the dane policy). Endpoints and
// queues are not initialized: that would bind ports and start delivering.
func verifyConfig(path string) error {
	nodes, err := maddyconf.ReadFile(path)
	if err != nil {
		return err
	}
	globals, blocks, err := maddy.ReadGlobals(nodes)
	if err != nil {
		return err
	}
	module.NoRun = true
	defer hooks.RunHooks(hooks.EventShutdown)
	_, mods, err := maddy.RegisterModules(globals, blocks)
	if err != nil {
		return err
	}
	checked, err := initRemoteTargets(mods)
	if err != nil {
		return err
	}
	if checked == 0 {
		fmt.Fprintln(os.Stderr, "note: no top-level target.remote block found; inline remote targets are checked when the server starts")
	}
	return nil
}

// initRemoteTargets initializes the top-level target.remote blocks (and,
// through maddy's lazy initialization, what they reference), each once:
// a block that another one references, such as the target a TLS report
// pipeline delivers to, is initialized by that reference already.
func initRemoteTargets(mods []maddy.ModInfo) (int, error) {
	n := 0
	for _, m := range mods {
		if m.Cfg.Name != "target.remote" {
			continue
		}
		if _, err := module.GetInstance(m.Instance.InstanceName()); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
