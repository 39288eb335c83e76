//go:build !linux

package queue

import (
	"os"

	bolt "go.etcd.io/bbolt"
)

// reopenDB is not done here: it relies on Linux's dup3 to keep the file
// lock while the handle is replaced.
func reopenDB(path string, o *Options, file *os.File) (*bolt.DB, *os.File, error) {
	return nil, nil, errReopenUnsupported
}
