// Command pause is the pod sandbox's process (what registry.k8s.io/pause does): it holds the Pod's
// namespaces, reaps orphaned children and exits on SIGINT/SIGTERM. No registry is reachable here, so the
// real node builds its sandbox image from this (operator/kubestill/dev/images.py).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
