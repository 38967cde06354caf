// Package jssdk embeds the msync browser SDK (the ES modules in src/), so the
// Go binary can serve it (package web, at /demo/sdk/) without npm. The SDK is
// plain JavaScript: src/ is both the source and what browsers load.
package jssdk

import "embed"

// Files holds src/*.js.
//
//go:embed src/*.js
var Files embed.FS
