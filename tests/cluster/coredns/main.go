// Command coredns is CoreDNS with only the plugins the real node's cluster DNS uses
// (operator/kubestill/dev/realnode.py writes its Corefile). The full build links every cloud provider's SDK:
// several times the download and build time for plugins a test cluster never uses. The directive order is
// CoreDNS's own (plugin.cfg): it decides how a query flows through the plugins.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{
		"bind", "ready", "health", "errors", "log", "loadbalance", "cache", "hosts", "kubernetes", "forward",
	}
}

func main() {
	coremain.Run()
}
