// Command kubectl is the upstream kubectl, at the control plane's version.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		// Same as upstream kubectl: print the error the way kubectl users know and exit non-zero.
		util.CheckErr(err)
	}
}
