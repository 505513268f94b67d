package maddyconf

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/foxcpp/maddy/framework/config"
)

// The start-up self-check of both glues (integration.go) builds a real
// mx_auth group through maddy's registry, configures it with ProbeBlock and
// asks GroupKeeps whether the group kept our policy. Creating and
// configuring the group differs between the maddy versions; the block and
// the group's policy list do not (internal/target/remote/policy_group.go).

// ProbeBlock is `mx_auth { dane { } }`, the configuration the self-check
// gives the group.
func ProbeBlock() *config.Map {
	block := config.Node{
		Name: "mx_auth",
		File: "<daneguard self-check>",
		Children: []config.Node{
			{Name: "dane", File: "<daneguard self-check>", Line: 1, Children: []config.Node{}},
		},
	}
	return config.NewMap(map[string]interface{}{}, block)
}

// GroupKeeps reports whether the configured mx_auth group grp keeps a policy
// for which ours is true in PolicyGroup.L, the ordered list target.remote
// runs; an error says what it keeps instead, or that maddy's internals
// changed.
func GroupKeeps(grp any, ours func(any) bool) error {
	v := reflect.ValueOf(grp)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return fmt.Errorf("mx_auth group is a %s, not a struct", v.Kind())
	}
	l := v.FieldByName("L")
	if !l.IsValid() || l.Kind() != reflect.Slice {
		return errors.New("mx_auth group has no policy list L; maddy's internals changed")
	}
	for i := 0; i < l.Len(); i++ {
		if ours(l.Index(i).Interface()) {
			return nil
		}
	}
	return fmt.Errorf("mx_auth group keeps %d policies for a dane block, none of them this module", l.Len())
}
