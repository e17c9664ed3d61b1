// Package ext holds the extension points of Traefik's dynamic configuration. The open-source build leaves them
// empty (a commercial build fills them); Traefik v3.7.13 embeds HTTP and Router inline in its own structs, so
// empty structs with these names are all it needs.
package ext

// HTTP is embedded in dynamic.HTTPConfiguration; it adds no fields.
type HTTP struct{}

// Router is embedded in dynamic.Router; it adds no fields.
type Router struct{}
