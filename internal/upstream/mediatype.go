package upstream

import (
	"mime"
	"net/http"
)

// maxMediaType is RFC 6838's limit: 127 characters each for type and
// subtype, plus the slash.
const maxMediaType = 255

// headerMediaType is the media type of an upstream's Content-Type, or "" when
// it is not one. A blob's type is kept with the blob and served to every
// client of that digest, whichever registry they asked: it must be a media
// type, not whatever text an upstream put in the header.
func headerMediaType(h http.Header) string {
	v := h.Get("Content-Type")
	if v == "" || len(v) > 4*maxMediaType {
		return ""
	}
	mt, _, err := mime.ParseMediaType(v)
	if err != nil || len(mt) > maxMediaType {
		return ""
	}
	return mt
}
