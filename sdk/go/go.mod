// The kata SDK for Go (see README.md). Plugins get a copy in
// third_party/kata-sdk from `kata plugin new --lang go`, with
// go.bytecodealliance.org/pkg next to it in third_party/go-pkg.
module kata

go 1.25

require go.bytecodealliance.org/pkg v0.2.2

replace go.bytecodealliance.org/pkg => ./third_party/go-pkg
