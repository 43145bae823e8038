// Package residency keeps a long-running keywarden's resident memory to
// what it uses: once started, it drops from the process the pages of its
// own executable that start-up touched.
//
// Package initialisation (the cloud SDKs' endpoint tables, protobuf
// registries, flag and config parsing) touches code and read-only data in
// a few hundred places, and the kernel maps the cached pages around each
// fault (fault-around, 64 KiB): 18 of the 22 MiB an idle sidecar had
// resident were pages of the executable it would not touch again.
// DropStartupPages unmaps them (madvise MADV_DONTNEED on the executable's
// read-only private mappings); the pages stay in the page cache, shared
// with every process of the same executable, and a page used again is
// mapped again on its first touch (a minor fault, no disk read while the
// page is cached). Writable mappings are never touched: dropping them
// would lose the program's data.
package residency

// DropStartupPages unmaps the pages of the running executable's read-only
// mappings (code, read-only data) from this process, and returns how many
// bytes of mappings it covered. Call it once, after start-up. On systems
// other than Linux it does nothing.
func DropStartupPages() (int64, error) {
	return dropStartupPages()
}
