package filesink

// SetAfterTempWrite sets the hook Write runs between its temporary file's
// close and its rename.
func SetAfterTempWrite(f func()) { afterTempWrite = f }

// StaleTemp is the age past which a sink removes a temporary file of its path.
const StaleTemp = staleTemp
