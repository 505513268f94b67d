// Command foreigndane is the daneguard maddy 0.9 command with the registry
// entry mx_auth.dane pointing at a factory that is not the glue's, for the
// end-to-end test of the start-up self-check (tests/). It is a test
// fixture, not a build anyone should run.
package main

import (
	_ "unsafe" // for go:linkname

	"github.com/foxcpp/maddy/framework/container"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/foxcpp/maddy/framework/module/modules"
	daneguard "github.com/maddy-dane/daneguard/ports/maddy-0.9"
	"github.com/maddy-dane/daneguard/ports/maddy-0.9/internal/maddymain"
)

//go:linkname registry github.com/foxcpp/maddy/framework/module/modules.modules
var registry map[string]modules.FuncNewModule

// init runs after the glue's (this package imports it): another module
// takes mx_auth.dane over, as a second plugin linked into the same binary
// would.
func init() {
	registry[daneguard.ModuleName] = func(c *container.C, name, inst string) (module.Module, error) {
		return daneguard.New(c, name, inst)
	}
}

func main() { maddymain.Main() }
