//go:build tools

// Package tools pins the Helm release whose command-line tool the tests run
// (`helm lint`, `helm template`); build.sh builds it into target/helm.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
