module lockstep/gohost/vault

go 1.25.0

require (
	github.com/hashicorp/vault/sdk v0.25.1
	lockstep/gohost/hostapi v0.0.0
)

replace lockstep/gohost/hostapi => ../hostapi
