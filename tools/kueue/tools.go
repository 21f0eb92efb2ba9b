//go:build tools

// Package tools records Kueue's controller manager, built by ../build.sh for the Kueue
// admission tests (the real batch/job quota controller on the test control plane).
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
