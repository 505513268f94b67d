package daneguard

import (
	"sync"

	"github.com/maddy-dane/daneguard/internal/engine"
)

// Initialized policy instances, in the order maddy initialized them. The
// operator's checker (`maddy check --config ...`) initializes the
// configuration like `maddy run` would and then drives the very engine a
// `dane { }` block built.
var (
	instancesMu sync.Mutex
	instances   []*Policy
)

func trackInstance(p *Policy) {
	instancesMu.Lock()
	instances = append(instances, p)
	instancesMu.Unlock()
}

// Instances returns the policy instances initialized so far in this
// process.
func Instances() []*Policy {
	instancesMu.Lock()
	defer instancesMu.Unlock()
	return append([]*Policy(nil), instances...)
}

// Engine returns the decision engine of an initialized instance (nil
// before Init).
func (p *Policy) Engine() *engine.Engine { return p.eng }

// Resolvers returns the DNS resolvers the instance queries.
func (p *Policy) Resolvers() []string {
	if p.resolver == nil {
		return nil
	}
	return p.resolver.Servers()
}
