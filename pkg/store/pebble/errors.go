package pebble

import "errors"

// ErrInvalidConfig wraps every problem Open finds in a Config.
var ErrInvalidConfig = errors.New("store/pebble: invalid config")
