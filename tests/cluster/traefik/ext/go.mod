// Stands in for github.com/traefik/traefik/dynamic/ext, a nested module of Traefik's repository that Traefik's
// go.mod reaches through a relative replace (./pkg/config/dynamic/ext): a module zip never contains nested
// modules, so the proxy cannot serve it.
module github.com/traefik/traefik/dynamic/ext

go 1.24.0
