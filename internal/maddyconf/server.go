package maddyconf

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	parser "github.com/foxcpp/maddy/framework/cfgparser"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/service"
)

// ReceiverModuleName is the TLS report receiver's module name in both
// builds (receiver.go of each glue).
const ReceiverModuleName = "target.tlsrpt_receiver"

// ReadFile parses a maddy configuration file with maddy's own parser
// (macros and imports expanded) into its blocks; nothing is configured.
func ReadFile(path string) ([]config.Node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parser.Read(f, path)
}

// ServerConf is the self-check's view of the server in the parsed
// configuration nodes (from path): its hostname, state directory, the
// domains and listen addresses of the port 25 endpoints and the
// certificate their tls directive loads. No module is configured.
func ServerConf(path string, nodes []config.Node) (*selfcheck.ServerConf, error) {
	mc := &selfcheck.ServerConf{StateDir: "/var/lib/maddy"}
	var globalTLS *config.Node
	for i, n := range nodes {
		switch n.Name {
		case "hostname":
			if len(n.Args) == 1 {
				mc.Hostname = n.Args[0]
			}
		case "state_dir":
			if len(n.Args) == 1 {
				mc.StateDir = n.Args[0]
			}
		case "tls":
			globalTLS = &nodes[i]
		}
	}
	if mc.Hostname == "" {
		return nil, fmt.Errorf("%s: no top-level hostname directive", path)
	}
	var tlsNode *config.Node
	for _, n := range nodes {
		if n.Name != "smtp" || !listensOn25(n.Args) {
			continue
		}
		for _, a := range n.Args {
			if u, err := url.Parse(a); err == nil {
				if ip := net.ParseIP(strings.Trim(u.Hostname(), "[]")); ip != nil && !ip.IsUnspecified() {
					mc.Listen = append(mc.Listen, ip)
				}
			}
		}
		for i, ch := range n.Children {
			switch ch.Name {
			case "tls":
				if tlsNode == nil {
					tlsNode = &n.Children[i]
				}
			case "destination":
				for _, d := range ch.Args {
					if d != "postmaster" && !strings.ContainsAny(d, "@&/$") {
						mc.Domains = append(mc.Domains, d)
					}
				}
			}
		}
	}
	if tlsNode == nil {
		tlsNode = globalTLS
	}
	serverTLS(mc, nodes, tlsNode)
	return mc, nil
}

func listensOn25(args []string) bool {
	for _, a := range args {
		if u, err := url.Parse(a); err == nil && u.Port() == "25" {
			return true
		}
	}
	return false
}

// serverTLS finds the certificate the tls directive loads: `tls file CERT
// KEY`, `tls { loader acme { ... } }` or a reference to a top-level
// tls.loader.file / tls.loader.acme block. Relative paths are relative to
// the state directory, where maddy runs (maddy's file loader, in 0.8.2
// and 0.9.4 alike, takes only an absolute certificate path; a key path
// may be relative).
func serverTLS(mc *selfcheck.ServerConf, nodes []config.Node, n *config.Node) {
	mc.Source = selfcheck.SourceFile
	if n == nil {
		mc.CertErr = fmt.Errorf("no tls directive for the port 25 endpoint")
		return
	}
	loader, args, block := "", n.Args, []config.Node(nil)
	if len(args) == 0 {
		for _, ch := range n.Children {
			if ch.Name == "loader" && len(ch.Args) > 0 {
				args, block = ch.Args, ch.Children
			}
		}
	}
	if len(args) == 0 || args[0] == "off" {
		mc.CertErr = fmt.Errorf("tls is off on the port 25 endpoint")
		return
	}
	loader = args[0]
	if ref, ok := strings.CutPrefix(loader, "&"); ok {
		for _, t := range nodes {
			if strings.HasPrefix(t.Name, "tls.loader.") && len(t.Args) > 0 && t.Args[0] == ref {
				loader, block = strings.TrimPrefix(t.Name, "tls.loader."), t.Children
				args = append([]string{loader}, t.Args[1:]...)
			}
		}
	}
	rel := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(mc.StateDir, p)
		}
		return p
	}
	switch loader {
	case "file":
		if len(args) >= 3 {
			mc.CertPath, mc.KeyPath = rel(args[1]), rel(args[2])
			return
		}
		mc.CertErr = fmt.Errorf("tls file without CERT KEY arguments")
	case "acme":
		mc.Source = selfcheck.SourceACME
		store, host := filepath.Join(mc.StateDir, "acme"), mc.Hostname
		for _, ch := range block {
			if len(ch.Args) == 1 && ch.Name == "store_path" {
				store = rel(ch.Args[0])
			}
			if len(ch.Args) == 1 && ch.Name == "hostname" {
				host = ch.Args[0]
			}
		}
		mc.CertPath, mc.CertErr = selfcheck.ACMECertPath(store, host)
	default:
		mc.CertErr = fmt.Errorf("tls loader %q is not understood by the self-check", loader)
	}
}

// TLSRPTDirs lists the TLS report directories of the tlsrpt blocks inside
// dane blocks, each once; stateDir is the configuration's state_dir as
// maddy resolved it.
func TLSRPTDirs(nodes []config.Node, stateDir string) []string {
	seen := map[string]bool{}
	var dirs []string
	var walk func(ns []config.Node, inDane bool)
	walk = func(ns []config.Node, inDane bool) {
		for _, n := range ns {
			if n.Name == "tlsrpt" && inDane {
				if len(n.Args) == 1 && n.Args[0] == "off" {
					continue
				}
				dir := service.DefaultTLSRPTDir(stateDir)
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
	return dirs
}

// ReceiverStores lists where every target.tlsrpt_receiver block (top-level
// or inline) keeps its reports, each block parsed and validated as the
// module parses it; globals are maddy's (ReadGlobals), stateDir its state
// directory. The first invalid block is the error, after the others.
func ReceiverStores(nodes []config.Node, globals map[string]interface{}, stateDir string) ([]service.ReceiverStore, error) {
	hostname, _ := globals["hostname"].(string)
	var out []service.ReceiverStore
	var firstErr error
	var walk func(ns []config.Node)
	walk = func(ns []config.Node) {
		for _, n := range ns {
			if n.Name == ReceiverModuleName || n.Name == strings.TrimPrefix(ReceiverModuleName, "target.") {
				s := service.DefaultReceiverSettings()
				m := config.NewMap(globals, n)
				Declare(m, service.ReceiverDirectives, &s)
				_, err := m.Process()
				if err == nil {
					if err = s.Validate(hostname, stateDir); err != nil {
						err = config.NodeErr(n, "%v", err)
					}
				}
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				st := service.ReceiverStore{Path: s.StorePath, Shared: s.SharedStore}
				if !slices.ContainsFunc(out, func(o service.ReceiverStore) bool { return o.Path == st.Path && o.Shared == nil && st.Shared == nil }) {
					out = append(out, st)
				}
				continue
			}
			walk(n.Children)
		}
	}
	walk(nodes)
	return out, firstErr
}
