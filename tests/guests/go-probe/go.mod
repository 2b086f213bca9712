// Test guest go-probe: the Go row of tests/languages.rs, built by
// `kata plugin build` against the SDK in this checkout.
module go-probe

go 1.25

require (
	go.bytecodealliance.org/pkg v0.2.2
	kata v0.1.2
)

replace kata => ../../../sdk/go

replace go.bytecodealliance.org/pkg => ../../../sdk/go/third_party/go-pkg
