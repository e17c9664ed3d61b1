// Builds SeaweedFS's `weed`, the S3-compatible server of kubestill's tests and demo, from its Go module.
// `go install` is refused (the module has a replace directive), hence this wrapper module that repeats it.
module github.com/kubestill/kubestill/tests/cluster/seaweedfs

go 1.26.6

require github.com/seaweedfs/seaweedfs v0.0.0-20261109003541-7506e5f91cd6

replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
