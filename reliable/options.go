package reliable

import (
	"fmt"
	"time"
)

// field is one numeric option: its name in errors, where it lives, and the
// default that replaces zero.
type field[T int | int64 | time.Duration] struct {
	name string
	v    *T
	def  T
}

// fillDefaults sets every zero field to its default and rejects negative
// ones with an error naming the options type and field.
func fillDefaults[T int | int64 | time.Duration](typ string, fields ...field[T]) error {
	for _, f := range fields {
		if *f.v < 0 {
			return fmt.Errorf("reliable: %s.%s is negative (%v)", typ, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return nil
}
