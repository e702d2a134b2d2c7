package server

import "unsafe"

// b2s views b as a string without copying. The string is valid only while b
// is: for request data, until the handler returns. The engine copies what it
// keeps (engine.PurchaseRequest). This is the package's only unsafe code.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
