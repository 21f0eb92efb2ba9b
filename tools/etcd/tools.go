//go:build tools

// Package tools records etcd's main package, built by ../build.sh.
package tools

import _ "go.etcd.io/etcd/server/v3"
