// Builds Traefik v3 (the Gateway API data plane of kubestill's tests and demo) from its Go module.
// `go install` is refused (Traefik's go.mod has replace directives), hence this wrapper module. It repeats them,
// with workarounds for what the module proxy does not serve (build.sh says why for each).
module github.com/kubestill/kubestill/tests/cluster/traefik

go 1.26.6

require github.com/traefik/traefik/v3 v3.7.13

// Upstream: a relative path inside Traefik's repository, absent from its module zip.
replace github.com/traefik/traefik/dynamic/ext => ./ext

// Upstream pins v0.4.1-0.20260804094822-b975dcaa8c48, which the proxy refuses (403); this older fork commit is
// served and compiles against Traefik's basic/digest auth middlewares.
replace github.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.20200324110947-a37a7636d23e

// As upstream.
replace github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59

// lego v5.4.1 without the 13 DNS providers whose SDKs the proxy refuses; build.sh generates it from the module
// cache (lego-trimmed/ is not committed).
replace github.com/go-acme/lego/v5 => ./lego-trimmed
