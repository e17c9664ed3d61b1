// Command kube-controller-manager is the upstream controller manager. The test control plane runs only its
// garbage collector and namespace controllers: ownerReferences cascade and namespaces finalize as in a real
// cluster, while Jobs and Deployments are left to kubestill's local node (there are no real nodes).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
