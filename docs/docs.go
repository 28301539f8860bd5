// Package docs holds the documents the service serves about itself: the
// OpenAPI description of its HTTP API (openapi.yaml), the one source of
// truth that the API's tests check every response against.
package docs

import _ "embed"

// OpenAPI is openapi.yaml, the OpenAPI 3.1 description of the HTTP API.
//
//go:embed openapi.yaml
var OpenAPI []byte
