//go:build tools

// Package tools records toxiproxy's server, built by ../build.sh for the chaos suite
// (a real fault proxy between the operator and the API server).
package tools

import (
	_ "github.com/Shopify/toxiproxy/v2/cmd/server"
)
